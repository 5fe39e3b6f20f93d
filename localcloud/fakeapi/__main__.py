"""`python -m localcloud.fakeapi`."""

from localcloud.fakeapi.cli import main

raise SystemExit(main())
