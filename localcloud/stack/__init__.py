"""The embedded local cloud, `LocalCloud` (localcloud/stack/cloud.py), one concern a module."""

from localcloud.stack.cloud import MOTO_CREDENTIAL, REGION, LocalCloud

__all__ = ["MOTO_CREDENTIAL", "REGION", "LocalCloud"]
