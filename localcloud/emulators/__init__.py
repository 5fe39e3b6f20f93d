"""The emulated services the local cloud runs instead of AWS and RDS, without Docker.

`moto_process.py` starts the moto server in its own process, `moto_server.py` is what runs in
it (moto with its quadratic Kinesis paths and racy shard writes fixed), `postgres.py` the
embedded PostgreSQL standing in for RDS, `tls_front.py` PostgreSQL's TLS in front of it.
"""
