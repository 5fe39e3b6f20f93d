"""`python -m localcloud.fakeapi`."""

from localcloud.fakeapi.data import main

raise SystemExit(main())
