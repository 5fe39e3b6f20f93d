"""The e2e tier: runs through the embedded local cloud (`LocalCloud`, `python -m localcloud`).

Each module builds the clouds it uses in its own temporary folder, on free ports, so xdist
workers never share one; a test that changes a cloud another test reads restores it (see
`restored_tables`) or builds its own.
"""

from __future__ import annotations
