"""A MooVitamix-compatible fake API (the package; `data.py` holds it until it is split)."""

from localcloud.fakeapi.data import *  # noqa: F403
from localcloud.fakeapi.data import HOSTILE_STRINGS, _poison_variants, __all__  # noqa: F401
