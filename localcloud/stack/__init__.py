"""The embedded local cloud (`LocalCloud`), one concern per module; see localcloud/stack/cloud.py."""

from localcloud.stack.cloud import MOTO_CREDENTIAL, REGION, LocalCloud

__all__ = ["MOTO_CREDENTIAL", "REGION", "LocalCloud"]
