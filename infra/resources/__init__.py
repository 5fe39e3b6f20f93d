"""Declarative AWS resources, usable two ways: applied with boto3, or rendered as CloudFormation.

A resource knows how to create-or-update itself against whatever endpoint boto3 is pointed at
(AWS, LocalStack, moto: `AWS_ENDPOINT_URL`), how to delete itself, and what it looks like as
CloudFormation. Both forms come from the same fields, so the script and the template cannot
drift. `apply` compares before it writes: re-applying an unchanged resource makes no change
and reports `unchanged`.

A resource may reference another one's attribute with `Attr` (the value once applied, an
`Fn::GetAtt`/`Ref` in CloudFormation); resources are applied in list order, so the referenced
one must come first.
"""

from __future__ import annotations

from infra.resources.base import (
    Action,
    ApplyContext,
    Attr,
    Change,
    Resource,
    contains,
)
from infra.resources.dynamodb import DynamoTable, TableIndex
from infra.resources.kinesis import KinesisStream
from infra.resources.s3 import PrivateBucket
from infra.resources.secretsmanager import Secret
from infra.resources.sns import Topic
from infra.resources.sqs import Queue

__all__ = [
    "Action",
    "ApplyContext",
    "Attr",
    "Change",
    "DynamoTable",
    "KinesisStream",
    "PrivateBucket",
    "Queue",
    "Resource",
    "Secret",
    "TableIndex",
    "Topic",
    "contains",
]
