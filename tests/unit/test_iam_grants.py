"""What each function's IAM policy allows and denies, read from the policy documents alone.

The documents are generated from one template (`infra/policies.py`) for every stage. A property
test mutates every granted resource of every stage into near misses (same prefix, other stage,
one character off, other account or region), which must all be denied; every ARN names the
stage's pinned region and account; each function's boundaries are spelt out (the load cannot
write the ledger the reconciliation trusts, the worker does a work item's calls and no more,
only the reconcile function may be asked for a verdict). That the grants are exactly what a
run uses is tests/e2e/test_iam_policies.py, which records the calls in the local cloud.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from infra import policies
from infra.chalice_config import read_config, write_config
from infra.provision import TABLE_KEYS
from infra.stages import FUNCTIONS, Stage
from tests.helpers.iam_audit import Call, allows, granted_actions, grants, local_arn, local_policy


def test_the_load_may_not_write_the_ledger_the_reconciliation_trusts() -> None:
    for stage_name in STAGES:
        stage = Stage.load(stage_name)
        ledger = policies.stage_arns(stage).table("run-pages")
        entity = policies.stage_arns(stage).table("users")
        load = policies.function_policy(stage, "load")
        for action in ("dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DeleteItem"):
            assert not allows(load, Call("load", action, (ledger,))), (stage_name, action)
        assert allows(load, Call("load", "dynamodb:BatchWriteItem", (entity,)))
        # its evidence items only (`<run_id>/load`), never a page of the ledger
        for run_key, allowed in (
            ("20260101T000000Z-abcd1234/load", True),
            ("20260101T000000Z-abcd1234", False),
        ):
            update = Call(
                "load", "dynamodb:UpdateItem", (ledger,), (("dynamodb:LeadingKeys", run_key),)
            )
            assert allows(load, update) is allowed, (stage_name, run_key)
        reconcile = policies.function_policy(stage, "reconcile")
        assert not allows(reconcile, Call("reconcile", "dynamodb:BatchWriteItem", (ledger,)))


def test_policy_files_are_generated_from_the_template() -> None:
    assert policies.stale_files() == []


def test_no_resource_is_a_bare_wildcard_except_where_aws_allows_nothing_narrower() -> None:
    config = read_config()
    for stage_name in config["stages"]:
        for file_name, document in policies.policy_files(Stage.load(stage_name)).items():
            for statement in document["Statement"]:
                if statement["Resource"] == "*":
                    assert set(statement["Action"]) <= {
                        "cloudwatch:PutMetricData",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                    }, file_name
                    if "cloudwatch:PutMetricData" in statement["Action"]:
                        assert statement["Condition"]["StringEquals"]["cloudwatch:namespace"]


def test_a_function_in_a_vpc_gets_exactly_the_network_interface_grants(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    config = read_config()
    load = config["stages"]["dev"]["lambda_functions"]["load"]
    load.update(subnet_ids=["subnet-0abc"], security_group_ids=["sg-0def"])
    write_config(config, project)
    stage = Stage.load("dev", project)
    load_policy = policies.function_policy(stage, "load")
    statements = {statement["Sid"]: statement for statement in load_policy["Statement"]}
    ec2 = f"arn:aws:ec2:{stage.region}:{stage.account_id}"
    assert f"{ec2}:subnet/subnet-0abc" in statements["AttachToVpc"]["Resource"]
    assert f"{ec2}:security-group/sg-0def" in statements["AttachToVpc"]["Resource"]
    ingest_sids = {s["Sid"] for s in policies.function_policy(stage, "ingest")["Statement"]}
    assert "AttachToVpc" not in ingest_sids
    assert "AttachToVpc" not in {  # a stage whose load function has no VPC (dev now has one)
        s["Sid"] for s in policies.function_policy(Stage.load("local"), "load")["Statement"]
    }


@given(
    action=st.sampled_from(["kinesis:PutRecords", "s3:PutObject", "dynamodb:UpdateItem"]),
    name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_/", min_size=1, max_size=30),
)
def test_policies_never_allow_resources_of_unknown_names(action: str, name: str) -> None:
    resource = {
        "kinesis:PutRecords": f"arn:aws:kinesis:us-east-1:123456789012:stream/{name}",
        "s3:PutObject": f"arn:aws:s3:::{name}/key",
        "dynamodb:UpdateItem": f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}",
    }[action]
    if "moovitamix-local" in name:
        return
    call = Call("ingest", action, (resource,))
    assert not allows(local_policy("ingest"), call)


STAGES = ("local", "localstack", "dev")


ARN_HEAD = re.compile(r"^arn:aws:(?P<service>[a-z0-9-]+):(?P<region>[^:]*):(?P<account>[^:]*):")


def test_every_arn_names_the_stage_s_region_and_account() -> None:
    """No `*` for region or account in any stage: the stage's config pins both."""
    config = read_config()
    for stage_name in config["stages"]:
        stage = Stage.load(stage_name)
        for file_name, document in policies.policy_files(stage).items():
            for statement in document["Statement"]:
                resources = statement["Resource"]
                for resource in resources if isinstance(resources, list) else [resources]:
                    if resource == "*":
                        continue
                    head = ARN_HEAD.match(resource)
                    assert head, resource
                    if head["service"] == "s3":  # S3 ARNs name neither
                        assert head["region"] == head["account"] == "", resource
                        continue
                    assert head["region"] == stage.region, (file_name, resource)
                    assert head["account"] == stage.account_id, (file_name, resource)
    assert Stage.load("local").account_id == "123456789012"  # moto's
    assert Stage.load("localstack").account_id == "000000000000"  # LocalStack's


def test_a_stage_without_a_pinned_region_or_account_gets_no_policy(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    config = read_config()
    config["stages"]["dev"]["infra"]["account_id"] = "*"
    config["stages"]["localstack"]["infra"].pop("region")
    write_config(config, project)
    with pytest.raises(ValueError, match=r"infra\.account_id .* not '\*'"):
        policies.function_policy(Stage.load("dev", project), "load")
    with pytest.raises(ValueError, match=r"infra\.region"):
        policies.function_policy(Stage.load("localstack", project), "load")


_POLICIES: dict[tuple[str, str], dict[str, Any]] = {}


def stage_policy(stage_name: str, function: str) -> dict[str, Any]:
    key = (stage_name, function)
    if key not in _POLICIES:
        _POLICIES[key] = policies.function_policy(Stage.load(stage_name), function)
    return _POLICIES[key]


def owned_resources(stage: Stage) -> list[tuple[str, int, int]]:
    """Every resource of the stage the functions touch, with the span of its name in the ARN.

    Built from the stage's names, not from the policies, so that a policy broadened by a
    wildcard (`moovitamix-local-*`) shows up as an allowed near miss.
    """
    settings = stage.settings
    spec = policies.stage_arns(stage).spec
    head = f"{stage.region}:{stage.account_id}"

    def named(arn: str, name: str) -> tuple[str, int, int]:
        start = arn.rindex(name) if arn.endswith(name) else arn.index(name)
        return arn, start, start + len(name)

    bucket = settings.quarantine_bucket
    resources = [
        named(f"arn:aws:kinesis:{head}:stream/{settings.stream_name}", settings.stream_name),
        named(f"arn:aws:s3:::{bucket}", bucket),
        named(f"arn:aws:s3:::{bucket}/run-1/users/ingest-p2-i18.json", bucket),
        named(
            f"arn:aws:secretsmanager:{head}:secret:{spec.postgres_secret_name}-AbCdEf",
            spec.postgres_secret_name,
        ),
        named(
            f"arn:aws:events:{head}:event-bus/{settings.event_bus_name}", settings.event_bus_name
        ),
    ]
    resources += [
        named(f"arn:aws:dynamodb:{head}:table/{name}", name)
        for name in (settings.table_name(suffix) for suffix in TABLE_KEYS)
    ]
    resources += [
        named(f"arn:aws:sqs:{head}:{name}", name)
        for name in (
            spec.failure_queue_name,
            spec.work_queue_name,
            spec.work_dead_letter_queue_name,
        )
    ]
    for function in FUNCTIONS:
        name = spec.function_name(function)
        group = f"arn:aws:logs:{head}:log-group:/aws/lambda/{name}"
        resources += [
            named(f"arn:aws:lambda:{head}:function:{name}", name),
            named(group, name),
            named(f"{group}:log-stream:2026/11/26/[$LATEST]0f1e2d", name),
        ]
    return resources


_GRANTED: dict[tuple[str, str], list[tuple[str, str, int, int]]] = {}


def granted_resources(stage_name: str, function: str) -> list[tuple[str, str, int, int]]:
    """(action, resource, name start, name end) the function's policy allows in its stage."""
    key = (stage_name, function)
    if key not in _GRANTED:
        policy = stage_policy(stage_name, function)
        actions = sorted(
            {action for _, action, pattern, condition in grants(policy) if pattern != "*"}
        )
        _GRANTED[key] = [
            (action, arn, start, end)
            for arn, start, end in owned_resources(Stage.load(stage_name))
            for action in actions
            if allows(policy, Call(function, action, (arn,)))
        ]
    return _GRANTED[key]


NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"


OTHER_STAGES = ("local", "localstack", "dev", "prod", "loca", "locall", "dev2")


@st.composite
def near_misses(draw: st.DrawFn) -> tuple[str, str, str, str, str]:
    """(stage, function, action, granted resource, a near miss of its name)."""
    stage_name = draw(st.sampled_from(STAGES))
    function = draw(st.sampled_from(FUNCTIONS))
    action, granted, start, end = draw(st.sampled_from(granted_resources(stage_name, function)))
    name = granted[start:end]
    kind = draw(st.sampled_from(["substitute", "insert", "delete", "stage", "account", "region"]))
    head = ARN_HEAD.match(granted)
    assert head is not None
    if kind in ("substitute", "delete"):
        index = draw(st.integers(min_value=start, max_value=end - 1))
        if kind == "delete":
            miss = granted[:index] + granted[index + 1 :]
        else:
            char = draw(st.sampled_from(NAME_CHARS).filter(lambda c: c != granted[index]))
            miss = granted[:index] + char + granted[index + 1 :]
    elif kind == "insert":  # one character, or a suffix such as `-archive` (same prefix)
        index = draw(st.integers(min_value=start, max_value=end))
        text = draw(st.text(alphabet=NAME_CHARS, min_size=1, max_size=8))
        miss = granted[:index] + text + granted[index:]
    elif kind == "stage":
        other = draw(st.sampled_from([name for name in OTHER_STAGES if name != stage_name]))
        renamed = re.sub(rf"(?<=-){stage_name}(?=[-/])", other, name)
        miss = granted[:start] + renamed + granted[end:]
    elif kind == "account":
        assume(head["account"] != "")  # S3 ARNs name no account
        other = draw(st.from_regex(r"\A[0-9]{12}\Z"))
        miss = granted.replace(f":{head['account']}:", f":{other}:", 1)
    else:
        assume(head["region"] != "")
        other = draw(st.sampled_from(["us-east-1", "us-west-2", "eu-west-1", "eu-central-1"]))
        miss = granted.replace(f":{head['region']}:", f":{other}:", 1)
    assume(miss != granted)
    return stage_name, function, action, granted, miss


def test_every_function_is_granted_some_resource_of_its_stage() -> None:
    for stage_name in STAGES:
        for function in FUNCTIONS:
            assert len(granted_resources(stage_name, function)) >= 3, (stage_name, function)


@given(case=near_misses())
def test_near_miss_resource_names_are_denied(case: tuple[str, str, str, str, str]) -> None:
    stage_name, function, action, granted, miss = case
    policy = stage_policy(stage_name, function)
    assert allows(policy, Call(function, action, (granted,)))
    assert not allows(policy, Call(function, action, (miss,))), f"{stage_name}: {miss}"


@given(
    namespace=st.one_of(
        st.text(min_size=1, max_size=40),
        st.sampled_from(
            [
                "MooVitamix/Pipeline",
                "MooVitamix/pipeline",
                "MooVitamix/Pipeline2",
                "MooVitamix/Pipeline ",
                "MooVitamix",
                "MooVitamix/*",
            ]
        ),
    )
)
def test_metrics_may_only_go_to_the_pipeline_s_namespace(namespace: str) -> None:
    """PutMetricData names no resource: the namespace condition is the only boundary."""
    for function in FUNCTIONS:
        policy = local_policy(function)
        call = Call(
            function, "cloudwatch:PutMetricData", ("*",), (("cloudwatch:namespace", namespace),)
        )
        assert allows(policy, call) is (namespace == "MooVitamix/Pipeline"), namespace


LOG_GROUP = "log-group:/aws/lambda/moovitamix-pipeline-local-ingest_worker"


WORK_ITEM_CALLS = [
    # what Lambda's SQS poller does with the worker's role, then what one work item does
    ("sqs:ReceiveMessage", local_arn("sqs", "moovitamix-local-ingest-work")),
    ("sqs:GetQueueAttributes", local_arn("sqs", "moovitamix-local-ingest-work")),
    ("sqs:DeleteMessage", local_arn("sqs", "moovitamix-local-ingest-work")),
    ("kinesis:PutRecords", local_arn("kinesis", "stream/moovitamix-local-events")),
    ("dynamodb:UpdateItem", local_arn("dynamodb", "table/moovitamix-local-runs")),
    ("dynamodb:GetItem", local_arn("dynamodb", "table/moovitamix-local-runs")),
    ("dynamodb:BatchWriteItem", local_arn("dynamodb", "table/moovitamix-local-run-pages")),
    *(
        ("dynamodb:BatchGetItem", local_arn("dynamodb", f"table/moovitamix-local-{entity}"))
        for entity in ("users", "tracks", "listen_history")
    ),
    ("s3:PutObject", "arn:aws:s3:::moovitamix-local-quarantine/run/users/p3.json"),
    ("logs:CreateLogStream", local_arn("logs", LOG_GROUP + ":log-stream:2026/11/26/x")),
    # the last work item of a run the load already finished asks for its verdict
    ("lambda:InvokeFunction", local_arn("lambda", "function:moovitamix-pipeline-local-reconcile")),
]


def test_the_worker_may_do_a_work_item_s_calls() -> None:
    policy = local_policy("ingest_worker")
    denied = [
        f"{action} on {resource}"
        for action, resource in WORK_ITEM_CALLS
        if not allows(policy, Call("ingest_worker", action, (resource,)))
    ]
    assert denied == []
    granted = {action for _, action in granted_actions(policy)}
    assert granted - {action for action, _ in WORK_ITEM_CALLS} == {
        "logs:CreateLogGroup",
        "logs:PutLogEvents",
        "cloudwatch:PutMetricData",
    }


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        # a worker neither continues runs nor fans out further: only the ingest does
        ("lambda:InvokeFunction", local_arn("lambda", "function:moovitamix-pipeline-local-ingest")),
        ("sqs:SendMessage", local_arn("sqs", "moovitamix-local-ingest-work")),
        # it consumes the work queue only, not the dead-letter or the load-failure queue
        ("sqs:ReceiveMessage", local_arn("sqs", "moovitamix-local-ingest-work-dlq")),
        ("sqs:DeleteMessage", local_arn("sqs", "moovitamix-local-load-failures")),
        ("dynamodb:BatchWriteItem", local_arn("dynamodb", "table/moovitamix-local-users")),
        ("dynamodb:PutItem", local_arn("dynamodb", "table/moovitamix-local-runs")),
        ("dynamodb:BatchGetItem", local_arn("dynamodb", "table/moovitamix-dev-users")),
    ],
)
def test_the_worker_may_not(action: str, resource: str) -> None:
    assert not allows(local_policy("ingest_worker"), Call("ingest_worker", action, (resource,)))


def test_the_ingest_may_fan_out_to_the_work_queue_only() -> None:
    policy = local_policy("ingest")
    work_queue = local_arn("sqs", "moovitamix-local-ingest-work")
    for action in ("sqs:GetQueueUrl", "sqs:SendMessage"):
        assert allows(policy, Call("ingest", action, (work_queue,)))
    for queue in ("moovitamix-local-ingest-work-dlq", "moovitamix-local-load-failures"):
        assert not allows(policy, Call("ingest", "sqs:SendMessage", (local_arn("sqs", queue),)))
    assert not allows(policy, Call("ingest", "sqs:ReceiveMessage", (work_queue,)))
    for entity in ("users", "tracks", "listen_history"):
        table = local_arn("dynamodb", f"table/moovitamix-local-{entity}")
        assert allows(policy, Call("ingest", "dynamodb:BatchGetItem", (table,)))
        assert not allows(policy, Call("ingest", "dynamodb:BatchWriteItem", (table,)))
    assert not allows(
        policy,
        Call(
            "ingest",
            "dynamodb:BatchGetItem",
            (local_arn("dynamodb", "table/moovitamix-local-runs"),),
        ),
    )


@pytest.mark.parametrize("function", ["ingest", "ingest_worker", "load"])
def test_the_verdict_request_may_invoke_the_reconcile_function_only(function: str) -> None:
    """The early verdict request (chalicelib/reconcile/verdict_request.py): the reconcile function
    of the same stage, nothing else (not the load, not another stage's reconcile)."""
    policy = local_policy(function)

    def invoke(name: str) -> Call:
        return Call(function, "lambda:InvokeFunction", (local_arn("lambda", f"function:{name}"),))

    assert allows(policy, invoke("moovitamix-pipeline-local-reconcile"))
    for other in (
        "moovitamix-pipeline-local-load",
        "moovitamix-pipeline-local-ingest_worker",
        "moovitamix-pipeline-dev-reconcile",
        "moovitamix-pipeline-local-reconcile2",
    ):
        assert not allows(policy, invoke(other))
    # the reconcile function invokes only itself (continuing a reconciliation short of time)
    reconcile = local_policy("reconcile")
    for other in ("load", "ingest", "ingest_worker"):
        call = Call(
            "reconcile",
            "lambda:InvokeFunction",
            (local_arn("lambda", f"function:moovitamix-pipeline-local-{other}"),),
        )
        assert not allows(reconcile, call)
