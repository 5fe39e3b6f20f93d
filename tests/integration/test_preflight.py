"""A stage reaches AWS only with TLS that verifies RDS and its functions in the RDS VPC.

The deploy refuses a `postgres` stage whose connecting functions have no subnets or security
groups (or the shipped placeholders), whose sslmode is not verify-full, or whose CA bundle is
missing, outside the package, unreadable or expired; the emulator stages are exempt. The
stage's `vpc_endpoints` become VPC endpoints in the CloudFormation template and, applied with
boto3 (moto), are created once, left alone the second time, and only the stage's own are
deleted.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint

from infra import policies, preflight
from infra.chalice_config import read_config, write_config
from infra.cloudformation import infra_template
from infra.deploy import spec_for
from infra.deploy.target import check_preflight
from infra.network import ENDPOINT_SERVICES, STAGE_TAG, vpc_endpoint_resources
from infra.resources import ApplyContext
from infra.stages import FUNCTIONS, PROJECT_ROOT, Stage
from tests.helpers.iam_audit import endpoints_needed
from tests.helpers.preflight_helpers import (
    BUNDLE,
    READY_ENDPOINTS,
    READY_NETWORK,
    make_ready,
    ready_section,
    valid_bundle,
)
from tests.helpers.tls_helpers import make_authority

REGION = "us-east-1"


def shipped_config() -> dict[str, Any]:
    return read_config()


def project_with(
    tmp_path: Path, config: dict[str, Any], bundle: bytes | None = None, name: str = "dev"
) -> Stage:
    """A project folder holding `config` (and a CA bundle at BUNDLE), loaded as a stage."""
    (tmp_path / ".chalice").mkdir(parents=True, exist_ok=True)
    write_config(config, tmp_path)
    if bundle is not None:
        (tmp_path / BUNDLE).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / BUNDLE).write_bytes(bundle)
    return Stage.load(name, tmp_path)


def ready_config(**environment: str) -> dict[str, Any]:
    """The dev stage filled in as a user would: real-looking ids, verify-full, the bundle."""
    config = copy.deepcopy(shipped_config())
    config["stages"]["dev"] = ready_section(config["stages"]["dev"])
    config["stages"]["dev"]["environment_variables"].update(environment)
    return config


def test_a_filled_in_dev_stage_passes(tmp_path: Path) -> None:
    stage = project_with(tmp_path, ready_config(), valid_bundle())
    assert preflight.problems(stage) == []
    check_preflight(stage)  # does not raise


def test_make_ready_fills_in_a_copy_of_the_project(tmp_path: Path) -> None:
    (tmp_path / ".chalice").mkdir()
    write_config(shipped_config(), tmp_path)
    assert preflight.problems(Stage.load("dev", tmp_path))
    make_ready(tmp_path, "dev")
    assert preflight.problems(Stage.load("dev", tmp_path)) == []
    assert policies.stale_files(tmp_path) == []


def test_the_shipped_dev_stage_is_refused_before_any_aws_call() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIPELINE_"))}
    # any AWS call would go to a closed port and fail with another message
    environment.update(AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    refused = subprocess.run(
        [sys.executable, "-m", "infra.deploy", "deploy", "--stage", "dev"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert refused.returncode == 1
    assert "stage dev is not ready for AWS" in refused.stderr
    assert "function load: replace the placeholders subnet-0000000000000000a" in refused.stderr
    assert "function reconcile: replace the placeholders" in refused.stderr
    assert f"the RDS CA bundle {BUNDLE} is missing: curl -fsSL" in refused.stderr
    assert "vpc_endpoints: replace the placeholders vpc-00000000000000000" in refused.stderr
    assert "deploying stage" not in refused.stdout


@pytest.mark.parametrize("function", preflight.POSTGRES_FUNCTIONS)
@pytest.mark.parametrize("missing", ["subnet_ids", "security_group_ids"])
def test_a_postgres_function_outside_the_vpc_is_refused(
    tmp_path: Path, function: str, missing: str
) -> None:
    config = ready_config()
    config["stages"]["dev"]["lambda_functions"][function][missing] = []
    stage = project_with(tmp_path, config, valid_bundle())
    with pytest.raises(preflight.PreflightError) as refused:
        check_preflight(stage)
    message = str(refused.value)
    assert f"function {function} connects to PostgreSQL but has no {missing}" in message
    assert f"lambda_functions.{function}.subnet_ids" in message
    assert len(preflight.problems(stage)) == 1  # only that function


def test_a_stage_without_the_postgres_sink_needs_neither_vpc_nor_bundle(tmp_path: Path) -> None:
    config = ready_config(PIPELINE_SINKS="dynamodb")
    for function in preflight.POSTGRES_FUNCTIONS:
        config["stages"]["dev"]["lambda_functions"][function].update(
            subnet_ids=[], security_group_ids=[]
        )
    assert preflight.problems(project_with(tmp_path, config)) == []


@pytest.mark.parametrize("name", ["local", "localstack"])
def test_the_emulator_stages_are_exempt(name: str) -> None:
    stage = Stage.load(name)
    assert "postgres" in stage.settings.sink_list
    assert stage.settings.postgres_sslmode == "disable"  # one machine, no network to cross
    assert preflight.problems(stage)  # they would not pass on AWS ...
    check_preflight(stage)  # ... but the deploy lets them through


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require", "verify-ca"])
def test_an_sslmode_that_does_not_verify_the_host_is_refused(tmp_path: Path, mode: str) -> None:
    stage = project_with(tmp_path, ready_config(PIPELINE_POSTGRES_SSLMODE=mode), valid_bundle())
    assert preflight.problems(stage) == [
        f"PIPELINE_POSTGRES_SSLMODE is {mode}: a stage on AWS must verify the RDS server "
        "(set verify-full and PIPELINE_POSTGRES_SSLROOTCERT)"
    ]


@pytest.mark.parametrize(
    ("setting", "bundle", "expected"),
    [
        (None, None, "PIPELINE_POSTGRES_SSLROOTCERT is not set"),
        ("/etc/ssl/certs/ca-certificates.crt", None, "give a path inside chalicelib/"),
        ("certs/rds.pem", None, "give a path inside chalicelib/"),
        (BUNDLE, None, "is missing: curl -fsSL https://truststore.pki.rds.amazonaws.com"),
        (BUNDLE, b"not a certificate\n", "is not a PEM bundle of certificates"),
        (BUNDLE, b"expired", "no certificate of chalicelib/certs/rds-global-bundle.pem is valid"),
    ],
)
def test_verify_full_without_a_usable_bundle_is_refused(
    tmp_path: Path, setting: str | None, bundle: bytes | None, expected: str
) -> None:
    config = ready_config()
    variables = config["stages"]["dev"]["environment_variables"]
    if setting is None:
        variables.pop("PIPELINE_POSTGRES_SSLROOTCERT")
    else:
        variables["PIPELINE_POSTGRES_SSLROOTCERT"] = setting
    if bundle == b"expired":
        bundle = make_authority("old root", valid_from_days=-30, valid_days=10).pem()
    stage = project_with(tmp_path, config, bundle)
    [problem] = preflight.problems(stage)
    assert expected in problem


# --------------------------------------------------------------------------------------------
# VPC endpoints: template and apply
# --------------------------------------------------------------------------------------------


def endpoint_resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: definition
        for logical_id, definition in template["Resources"].items()
        if definition["Type"] == "AWS::EC2::VPCEndpoint"
    }


def test_the_template_holds_an_endpoint_per_service_the_functions_call(tmp_path: Path) -> None:
    stage = project_with(tmp_path, ready_config(), valid_bundle())
    template = infra_template(spec_for(stage))
    endpoints = endpoint_resources(template)
    services = {
        definition["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1]: definition
        for definition in endpoints.values()
    }
    assert set(services) == set(ENDPOINT_SERVICES)
    # every AWS API the policies let a function in the VPC call has its endpoint
    in_vpc = [name for name in FUNCTIONS if stage.function_setting(name, "subnet_ids", [])]
    assert sorted(in_vpc) == ["load", "reconcile"]
    needed = {
        function: endpoints_needed(
            {
                action
                for statement in policies.function_policy(stage, function)["Statement"]
                for action in statement["Action"]
            }
        )
        for function in in_vpc
    }
    for function, endpoints_of_function in needed.items():
        assert set(endpoints_of_function) <= set(services), (function, endpoints_of_function)
    # the verdict request (load) and a reconciliation continuing (reconcile) invoke Lambda
    assert needed["load"]["lambda"] == needed["reconcile"]["lambda"] == {"lambda:InvokeFunction"}
    for name in ("dynamodb", "s3"):
        properties = services[name]["Properties"]
        assert properties["VpcEndpointType"] == "Gateway"
        assert properties["RouteTableIds"] == READY_ENDPOINTS["route_table_ids"]
        assert properties["VpcId"] == READY_ENDPOINTS["vpc_id"]
    for name in ("kinesis-streams", "sqs", "secretsmanager", "monitoring", "events", "lambda"):
        properties = services[name]["Properties"]
        assert properties["VpcEndpointType"] == "Interface"
        assert properties["SubnetIds"] == READY_NETWORK["subnet_ids"]
        assert properties["SecurityGroupIds"] == READY_ENDPOINTS["security_group_ids"]
        assert properties["PrivateDnsEnabled"] is True
    assert [
        str(match) for match in lint(json.dumps(template), config=ManualArgs(regions=[REGION]))
    ] == []


def test_endpoints_follow_the_stage_config(tmp_path: Path) -> None:
    narrowed = ready_config()
    narrowed["stages"]["dev"]["vpc_endpoints"]["services"] = ["dynamodb", "secretsmanager"]
    template = infra_template(spec_for(project_with(tmp_path / "a", narrowed, valid_bundle())))
    assert sorted(endpoint_resources(template)) == [
        "VpcEndpointDynamodb",
        "VpcEndpointSecretsmanager",
    ]
    nat = ready_config()
    del nat["stages"]["dev"]["vpc_endpoints"]  # the subnets reach AWS through a NAT gateway
    template = infra_template(spec_for(project_with(tmp_path / "b", nat, valid_bundle())))
    assert endpoint_resources(template) == {}
    wrong = ready_config()
    wrong["stages"]["dev"]["vpc_endpoints"]["services"] = ["dynamo"]
    with pytest.raises(ValueError, match=r"unknown \['dynamo'\]"):
        spec_for(project_with(tmp_path / "c", wrong, valid_bundle()))


def test_endpoints_are_created_once_and_only_ours_are_deleted(aws_env: str, tmp_path: Path) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{index}.0/24")["Subnet"]["SubnetId"]
        for index in (1, 2)
    ]
    route_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    group = ec2.create_security_group(GroupName="endpoints", Description="443", VpcId=vpc)[
        "GroupId"
    ]
    # an endpoint someone else made in the same VPC: used, never changed or deleted
    shared = ec2.create_vpc_endpoint(
        VpcId=vpc,
        ServiceName=f"com.amazonaws.{REGION}.sqs",
        VpcEndpointType="Interface",
        SubnetIds=subnets[:1],
    )["VpcEndpoint"]["VpcEndpointId"]
    config = ready_config()
    dev = config["stages"]["dev"]
    for function in preflight.POSTGRES_FUNCTIONS:
        dev["lambda_functions"][function].update(subnet_ids=subnets, security_group_ids=[group])
    dev["vpc_endpoints"] = {
        "vpc_id": vpc,
        "route_table_ids": [route_table],
        "security_group_ids": [group],
    }
    resources = vpc_endpoint_resources(spec_for(project_with(tmp_path, config, valid_bundle())))
    first = {change.resource: change for change in (r.apply(ApplyContext()) for r in resources)}
    created = len(ENDPOINT_SERVICES) - 1  # all but the shared sqs endpoint
    assert [change.action for change in first.values()].count("created") == created
    assert (
        "exists, not managed by this stage"
        in first[f"vpc endpoint sqs (interface) in {vpc}"].details
    )
    second = [resource.apply(ApplyContext()) for resource in resources]
    assert {change.action for change in second} == {"unchanged"}
    live = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
    ours = [
        endpoint
        for endpoint in live
        if {"Key": STAGE_TAG, "Value": "moovitamix-dev"} in endpoint.get("Tags", [])
    ]
    assert len(ours) == created
    gateway = next(endpoint for endpoint in ours if endpoint["ServiceName"].endswith(".dynamodb"))
    assert gateway["RouteTableIds"] == [route_table]
    deleted = [resource.delete(ApplyContext()) for resource in reversed(resources)]
    assert [change.action for change in deleted].count("deleted") == created
    remaining = [
        endpoint["VpcEndpointId"]
        for endpoint in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])[
            "VpcEndpoints"
        ]
        if str(endpoint.get("State", "")).lower() not in ("deleted", "deleting")
    ]
    assert remaining == [shared]
