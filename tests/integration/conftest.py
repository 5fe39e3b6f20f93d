"""The integration tier: one emulated service per test (the session's moto server, its embedded
PostgreSQL, a fake HTTP API such as the MooVitamix fake or a fake OSV service), never the
whole local cloud: that is tests/e2e. Fixtures come from tests/conftest.py."""
