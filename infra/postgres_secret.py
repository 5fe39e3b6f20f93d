"""Create-or-update the Secrets Manager secret holding PostgreSQL credentials.

In AWS, RDS writes this secret itself. LocalStack (no RDS in its free tier) and the local
cloud (embedded PostgreSQL) need one written for them, in the same JSON shape RDS uses, so
the pipeline reads its credentials the same way everywhere.

    python -m infra.postgres_secret --name moovitamix-localstack/postgres --host postgres \\
        --username moovitamix --dbname moovitamix      # the password is read from PGPASSWORD
"""

from __future__ import annotations

import argparse
import os
import sys

import orjson
from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from chalicelib.load.sinks.postgres_connection import Credentials


def secret_document(credentials: Credentials) -> str:
    """The JSON RDS stores for a PostgreSQL instance's credentials."""
    return orjson.dumps(
        {
            "engine": "postgres",
            "host": credentials.host,
            "port": credentials.port,
            "username": credentials.username,
            "password": credentials.password,
            "dbname": credentials.dbname,
        }
    ).decode()


def ensure_postgres_secret(name: str, credentials: Credentials) -> str:
    """Store the credentials under `name` (creating the secret if needed); returns its ARN."""
    client = aws.client("secretsmanager")
    document = secret_document(credentials)
    try:
        return str(client.create_secret(Name=name, SecretString=document)["ARN"])
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceExistsException":
            raise
    return str(client.put_secret_value(SecretId=name, SecretString=document)["ARN"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.postgres_secret",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", required=True, help="secret name")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--username", required=True)
    parser.add_argument("--dbname", required=True)
    args = parser.parse_args(argv)
    password = os.environ.get("PGPASSWORD")
    if not password:
        print(
            "set PGPASSWORD to the database password (it is never a command argument)",
            file=sys.stderr,
        )
        return 2
    credentials = Credentials(args.host, args.port, args.username, password, args.dbname)
    print(ensure_postgres_secret(args.name, credentials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
