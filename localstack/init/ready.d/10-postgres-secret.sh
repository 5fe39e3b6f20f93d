#!/bin/bash
# LocalStack init hook: store the PostgreSQL container's credentials in Secrets Manager, in the
# JSON shape RDS writes, under the name the `localstack` stage reads
# (PIPELINE_POSTGRES_SECRET_ARN). Runs when LocalStack is ready; re-running updates the value.
set -euo pipefail

name=moovitamix-localstack/postgres
document=$(mktemp)
trap 'rm -f "$document"' EXIT
chmod 600 "$document"
python3 - "$document" <<'PY'
import json, os, sys
with open(sys.argv[1], "w") as handle:
    json.dump({
        "engine": "postgres",
        "host": os.environ["MOOVITAMIX_PG_HOST"],
        "port": 5432,
        "username": os.environ["MOOVITAMIX_PG_USER"],
        "password": os.environ["MOOVITAMIX_PG_PASSWORD"],
        "dbname": os.environ["MOOVITAMIX_PG_DB"],
    }, handle)
PY
# file:// keeps the password off the command line
if ! awslocal secretsmanager create-secret --name "$name" \
        --secret-string "file://$document" >/dev/null 2>&1; then
    awslocal secretsmanager put-secret-value --secret-id "$name" \
        --secret-string "file://$document" >/dev/null
fi
echo "secret $name ready"
