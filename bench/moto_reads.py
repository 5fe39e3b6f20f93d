"""Per-row cost of moto's DynamoDB read path, stock or with the local cloud's moto patches.

Run: `python -m bench.moto_reads [--patched] [--rows N]`. In-process moto (`mock_aws`) goes
through the same handler and serializer as the moto server, without HTTP (the client's parsing
is included). With `--endpoint-url` it reads from a running moto server instead (stock:
`python -m moto.server -p PORT`;
patched: `python -m localcloud.emulators.moto_server -p PORT`). Measured:
a GSI Query read of N rows (hash `run_id`, range `run_page`,
INCLUDE `updated_at`, 1 MB pages, as the reconciliation reads a run back), and BatchGetItem
of 100 keys (N / 100 calls).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

import boto3
from moto import mock_aws


def _table(client: object, rows: int) -> None:
    client.create_table(  # type: ignore[attr-defined]
        TableName="t",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "N"},
            {"AttributeName": "run_id", "AttributeType": "S"},
            {"AttributeName": "run_page", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_run",
                "KeySchema": [
                    {"AttributeName": "run_id", "KeyType": "HASH"},
                    {"AttributeName": "run_page", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["updated_at"]},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for start in range(0, rows, 25):
        puts = [
            {
                "PutRequest": {
                    "Item": {
                        "id": {"N": str(j)},
                        "run_id": {"S": "r1"},
                        "run_page": {"S": f"users#{j // 100:06d}"},
                        "updated_at": {"S": "2024-01-01T00:00:00+00:00"},
                        "name": {"S": "x" * 200},
                        "a": {"S": "y" * 50},
                        "b": {"N": "12"},
                    }
                }
            }
            for j in range(start, min(start + 25, rows))
        ]
        client.batch_write_item(RequestItems={"t": puts})  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--patched",
        action="store_true",
        help="apply localcloud's patches and its collector thresholds, as its moto server does",
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--endpoint-url", help="a running moto server (else in-process moto)")
    args = parser.parse_args()
    if args.patched:
        import gc

        from localcloud.emulators import moto_server

        moto_server.apply()
        gc.set_threshold(*moto_server.COLLECTOR_THRESHOLDS)  # as the server runs
    with contextlib.nullcontext() if args.endpoint_url else mock_aws():
        client: Any = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=args.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # moto's dummy credentials  # nosec B106
        )
        _table(client, args.rows)
        page: dict[str, Any] = {}
        started, rows, calls = time.perf_counter(), 0, 0
        while True:
            answer = client.query(
                TableName="t",
                IndexName="by_run",
                KeyConditionExpression="run_id = :r",
                ExpressionAttributeValues={":r": {"S": "r1"}},
                **page,
            )
            rows, calls = rows + len(answer["Items"]), calls + 1
            if "LastEvaluatedKey" not in answer:
                break
            page = {"ExclusiveStartKey": answer["LastEvaluatedKey"]}
        gsi_s = time.perf_counter() - started
        started, got = time.perf_counter(), 0
        for first in range(0, args.rows, 100):
            keys = [{"id": {"N": str(j)}} for j in range(first, min(first + 100, args.rows))]
            answer = client.batch_get_item(RequestItems={"t": {"Keys": keys}})
            got += len(answer["Responses"]["t"])
        batch_s = time.perf_counter() - started
    mode = args.endpoint_url or ("patched" if args.patched else "stock")
    print(
        f"{mode}: GSI query {rows} rows in {calls} calls {gsi_s:.2f} s "
        f"({gsi_s / rows * 1e6:.0f} us/row); BatchGetItem {got} rows "
        f"{batch_s:.2f} s ({batch_s / got * 1e6:.0f} us/row)"
    )


if __name__ == "__main__":
    main()
