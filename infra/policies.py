"""Least-privilege IAM policies of the Lambda functions, generated from one template.

`autogen_policy` is off: each function's role gets exactly the policy written here, per stage
and per function (`.chalice/policy-<stage>-<function>.json`, named in `.chalice/config.json`).
Every resource is named: the stage's stream, tables, bucket, queues and secret, in the region
and account the stage's `infra` section of `.chalice/config.json` pins (never `*`: the deploy
refuses to run against another account or region, see `infra.deploy`). The only `"*"`
resources are for actions AWS does not scope to a resource (`cloudwatch:PutMetricData`, held
to the pipeline's namespace by a condition, and the EC2 `Describe*` calls of a function in a
VPC). `.chalice/policy-<stage>.json` is the stage's fallback for a function without its own
file: logging only, so a new function has to be granted what it uses.

    python -m infra.policies            # (re)write every policy file
    python -m infra.policies --check    # exit 1 when a file is missing or stale (CI, tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.load.evidence import EVIDENCE_SUFFIX, RUN_ROWS_INDEX
from infra import names
from infra.chalice_config import PROJECT_ROOT, read_config, stage_names
from infra.provision import TABLE_KEYS
from infra.spec import StackSpec
from infra.stages import FUNCTIONS, Stage

ENTITY_TABLES = tuple(suffix for suffix in TABLE_KEYS if suffix not in ("runs", "run-pages"))
"""The tables of the API's entities, which the load writes and change detection reads. Not the
run-pages ledger: the reconciliation trusts it as the record of what was published, so only
the functions that publish (ingest, ingest_worker) may write it."""


@dataclass(frozen=True)
class Arns:
    """ARNs of one stage's resources, in its region and account."""

    spec: StackSpec
    region: str
    account: str

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def log_group(self, function: str) -> list[str]:
        name = self.spec.log_group(function)
        return [self._arn("logs", f"log-group:{name}"), self._arn("logs", f"log-group:{name}:*")]

    def log_streams(self, function: str) -> str:
        name = self.spec.log_group(function)
        return self._arn("logs", f"log-group:{name}:log-stream:*")

    @property
    def stream(self) -> str:
        return self._arn("kinesis", f"stream/{self.spec.settings.stream_name}")

    def table(self, suffix: str) -> str:
        return self._arn("dynamodb", f"table/{self.spec.settings.table_name(suffix)}")

    @property
    def quarantine_objects(self) -> str:
        return f"arn:aws:s3:::{self.spec.settings.quarantine_bucket}/*"

    @property
    def failure_queue(self) -> str:
        return self._arn("sqs", self.spec.failure_queue_name)

    @property
    def work_queue(self) -> str:
        return self._arn("sqs", self.spec.work_queue_name)

    @property
    def postgres_secret(self) -> str:
        # Secrets Manager appends "-" and six random characters to a secret's name.
        return self._arn("secretsmanager", f"secret:{self.spec.postgres_secret_name}-??????")

    @property
    def quarantine_bucket(self) -> str:
        return f"arn:aws:s3:::{self.spec.settings.quarantine_bucket}"

    def function(self, function: str) -> str:
        return self._arn("lambda", f"function:{self.spec.function_name(function)}")

    @property
    def event_bus(self) -> str:
        return self._arn("events", f"event-bus/{self.spec.settings.event_bus_name}")

    def ec2(self, kind: str, identifier: str = "*") -> str:
        return self._arn("ec2", f"{kind}/{identifier}")


def stage_arns(stage: Stage) -> Arns:
    """The ARNs of a stage's resources, in the region and account its config pins."""
    spec = StackSpec(stage.settings, stage=stage.name, app_name=stage.app_name)
    return Arns(spec, stage.region, stage.account_id)


def _statement(
    sid: str, actions: list[str], resources: list[str] | str, **extra: Any
) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def _logging(arns: Arns, function: str) -> list[dict[str, Any]]:
    return [
        _statement("CreateLogGroup", ["logs:CreateLogGroup"], arns.log_group(function)),
        _statement(
            "WriteLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [arns.log_streams(function)]
        ),
    ]


def _metrics(namespace: str) -> dict[str, Any]:
    return _statement(
        "PutMetrics",
        ["cloudwatch:PutMetricData"],
        "*",  # PutMetricData has no resource type; the namespace condition narrows it
        Condition={"StringEquals": {"cloudwatch:namespace": namespace}},
    )


def _detect_changes(arns: Arns) -> dict[str, Any]:
    """Read the stored rows' content fingerprints (`fp`) to skip records that did not change."""
    return _statement(
        "DetectChanges",
        ["dynamodb:BatchGetItem"],
        [arns.table(suffix) for suffix in ENTITY_TABLES],
    )


def _vpc(arns: Arns, subnets: list[str], security_groups: list[str]) -> list[dict[str, Any]]:
    """What Lambda needs to attach a function to its VPC (only when one is configured)."""
    return [
        _statement(
            "AttachToVpc",
            [
                "ec2:CreateNetworkInterface",
                "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
            ],
            [
                arns.ec2("network-interface"),
                *(arns.ec2("subnet", subnet) for subnet in subnets),
                *(arns.ec2("security-group", group) for group in security_groups),
            ],
        ),
        _statement(
            "DescribeVpc",
            ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"],
            "*",  # EC2 Describe* actions support no resource-level permissions
        ),
    ]


def function_policy(stage: Stage, function: str) -> dict[str, Any]:
    """The policy document of one function of one stage."""
    arns = stage_arns(stage)
    namespace = stage.environment.get("POWERTOOLS_METRICS_NAMESPACE", "MooVitamix/Pipeline")
    statements = _logging(arns, function)
    if function == "ingest":
        statements += [
            _statement("PublishToStream", ["kinesis:PutRecords"], [arns.stream]),
            _statement(
                "RunManifests",
                ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                [arns.table("runs")],
            ),
            _statement(
                "RunPageLedger",  # the keys each page published, for the reconciliation
                ["dynamodb:BatchWriteItem", "dynamodb:Query"],
                [arns.table("run-pages")],
            ),
            _statement("QuarantineRecords", ["s3:PutObject"], [arns.quarantine_objects]),
            _statement(
                "ContinueRun",  # a long run re-invokes itself before its timeout
                ["lambda:InvokeFunction"],
                [arns.function("ingest")],
            ),
            _statement(
                "RequestVerdict",  # the run is loaded: ask for its verdict now, not at the schedule
                ["lambda:InvokeFunction"],
                [arns.function("reconcile")],
            ),
            _statement(
                "FanOutWorkItems",  # page ranges of a large resource, for ingest_worker
                ["sqs:GetQueueUrl", "sqs:SendMessage"],  # SendMessage covers SendMessageBatch
                [arns.work_queue],
            ),
            _detect_changes(arns),
            _metrics(namespace),
        ]
    elif function == "ingest_worker":
        statements += [
            _statement(
                "ReceiveWorkItems",  # the SQS event-source mapping polls with the function's role
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                [arns.work_queue],
            ),
            _statement("PublishToStream", ["kinesis:PutRecords"], [arns.stream]),
            _statement(
                "RunManifests",  # the item's counts and `work_done.<entity>`
                ["dynamodb:GetItem", "dynamodb:UpdateItem"],
                [arns.table("runs")],
            ),
            _statement(
                "RunPageLedger",  # the keys each page published, for the reconciliation
                ["dynamodb:BatchWriteItem"],
                [arns.table("run-pages")],
            ),
            _statement(
                "RequestVerdict",  # the run is loaded: ask for its verdict now
                ["lambda:InvokeFunction"],
                [arns.function("reconcile")],
            ),
            _detect_changes(arns),
            _statement("QuarantineRecords", ["s3:PutObject"], [arns.quarantine_objects]),
            _metrics(namespace),
        ]
    elif function == "reconcile":
        statements += [
            _statement(
                "SettleRuns",
                ["dynamodb:Scan", "dynamodb:GetItem", "dynamodb:UpdateItem"],
                [arns.table("runs")],
            ),
            _statement("ReadRunPageLedger", ["dynamodb:Query"], [arns.table("run-pages")]),
            _statement(
                "ReadBackRunRows",  # the rows each run wrote, from the entity tables' index
                ["dynamodb:Query"],
                [f"{arns.table(suffix)}/index/{RUN_ROWS_INDEX}" for suffix in ENTITY_TABLES],
            ),
            _statement(
                "LookUpStoredVersions",  # the records each page published, in the sinks
                ["dynamodb:BatchGetItem"],
                [arns.table(suffix) for suffix in ENTITY_TABLES],
            ),
            _statement("ListQuarantine", ["s3:ListBucket"], [arns.quarantine_bucket]),
            _statement("ReadQuarantine", ["s3:GetObject"], [arns.quarantine_objects]),
            _statement(
                "ReadPostgresCredentials", ["secretsmanager:GetSecretValue"], [arns.postgres_secret]
            ),
            _statement("SignalDatasetUpdated", ["events:PutEvents"], [arns.event_bus]),
            _statement(
                "ContinueReconciliation",  # a long sweep re-invokes itself before its timeout
                ["lambda:InvokeFunction"],
                [arns.function("reconcile")],
            ),
            _metrics(namespace),
        ]
    elif function == "load":
        statements += [
            _statement(
                "ReadStream",  # the event-source mapping polls with the function's role
                [
                    "kinesis:DescribeStream",
                    "kinesis:DescribeStreamSummary",
                    "kinesis:GetRecords",
                    "kinesis:GetShardIterator",
                    "kinesis:ListShards",
                ],
                [arns.stream],
            ),
            _statement(
                "WriteEntities",  # not the run-pages ledger the reconciliation trusts
                ["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"],
                [arns.table(suffix) for suffix in ENTITY_TABLES],
            ),
            _statement("RunManifests", ["dynamodb:UpdateItem"], [arns.table("runs")]),
            _statement(
                "LoadEvidence",  # only the load's own evidence items, never the ledger's pages
                ["dynamodb:UpdateItem"],
                [arns.table("run-pages")],
                Condition={
                    "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"*{EVIDENCE_SUFFIX}"]}
                },
            ),
            _statement(
                "RequestVerdict",  # the run is loaded: ask for its verdict now
                ["lambda:InvokeFunction"],
                [arns.function("reconcile")],
            ),
            _statement("QuarantineRecords", ["s3:PutObject"], [arns.quarantine_objects]),
            _statement(
                "SendFailedBatches",  # the mapping's on-failure destination, sent with this role
                ["sqs:SendMessage"],
                [arns.failure_queue],
            ),
            _statement(
                "ReadPostgresCredentials", ["secretsmanager:GetSecretValue"], [arns.postgres_secret]
            ),
            _metrics(namespace),
        ]
    else:
        raise ValueError(f"no policy template for function {function!r}")
    subnets = list(stage.function_setting(function, "subnet_ids", []) or [])
    groups = list(stage.function_setting(function, "security_group_ids", []) or [])
    if subnets and groups:
        statements += _vpc(arns, subnets, groups)
    return {"Version": "2012-10-17", "Statement": statements}


def fallback_policy(stage: Stage) -> dict[str, Any]:
    """For a function without its own file: it may write its logs, nothing else."""
    return {"Version": "2012-10-17", "Statement": _logging(stage_arns(stage), "*")}


def policy_files(stage: Stage) -> dict[str, dict[str, Any]]:
    """`{file name under .chalice/: document}` of one stage, as config.json must name them."""
    files = {names.stage_policy_file(stage.name): fallback_policy(stage)}
    for function in FUNCTIONS:
        files[names.function_policy_file(stage.name, function)] = function_policy(stage, function)
    return files


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def configuration_errors(stage: Stage) -> list[str]:
    """Where `.chalice/config.json` does not point each function at its generated file."""
    errors = []
    expected_stage_file = names.stage_policy_file(stage.name)
    if stage.section.get("iam_policy_file") != expected_stage_file:
        errors.append(f"stage {stage.name}: iam_policy_file should be {expected_stage_file}")
    for function in FUNCTIONS:
        expected = names.function_policy_file(stage.name, function)
        actual = stage.section.get("lambda_functions", {}).get(function, {}).get("iam_policy_file")
        if actual != expected:
            errors.append(
                f"stage {stage.name}, function {function}: iam_policy_file is {actual!r}, "
                f"should be {expected!r}"
            )
    if stage.config.get("autogen_policy") is not False:
        errors.append("autogen_policy must be false")
    return errors


def stale_files(project_dir: Path = PROJECT_ROOT) -> list[str]:
    """Every policy file that is missing or differs from the template, and config errors."""
    problems: list[str] = []
    for name in stage_names(read_config(project_dir)):
        stage = Stage.load(name, project_dir)
        problems += configuration_errors(stage)
        for file_name, document in policy_files(stage).items():
            path = project_dir / ".chalice" / file_name
            if not path.exists() or path.read_text() != render(document):
                problems.append(f".chalice/{file_name} is missing or stale")
    return problems


def write_all(project_dir: Path = PROJECT_ROOT) -> list[Path]:
    written = []
    for name in stage_names(read_config(project_dir)):
        for file_name, document in policy_files(Stage.load(name, project_dir)).items():
            path = project_dir / ".chalice" / file_name
            path.write_text(render(document))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.policies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_files()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m infra.policies` to regenerate", file=sys.stderr)
        return 1 if problems else 0
    for path in write_all():
        print(f"wrote {path.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
