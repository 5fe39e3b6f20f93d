"""The infrastructure as CloudFormation, and as the parts merged into Chalice's packages.

Rendered from the same resource list `infra.provision` applies, so the template and the script
cannot drift:

- `infra_template`: a stand-alone stack of everything Chalice does not create (deployable on
  its own, and what the Terraform package embeds as an `aws_cloudformation_stack`);
- `sam_merge_template`: the same plus the trigger's failure settings, written for
  `chalice package --merge-template`, which deep-merges it into Chalice's SAM template (and
  makes the `ingest_worker` function, hence its SQS mapping, wait for the work queue);
- `add_to_terraform`: edits Chalice's `chalice.tf.json` to create that stack, give the
  Kinesis event-source mapping the failure settings (`--merge-template` is CloudFormation-only)
  and make the work-queue mapping wait for the stack.
"""

from __future__ import annotations

from typing import Any

from infra import names
from infra.monitoring import cloudformation_resources
from infra.provision import ALARM_TOPIC, FAILURE_QUEUE, STREAM, WORK_QUEUE, stack_resources
from infra.resources import Attr
from infra.spec import StackSpec
from infra.trigger import KinesisEventSourceSettings, sam_event_overrides

TERRAFORM_STACK = "infra"
"""Name of the `aws_cloudformation_stack` resource in the Terraform package."""

CHALICE_LOAD_MAPPING = "load-kinesis-event-source"
"""Chalice's name of the load function's event-source mapping in `chalice.tf.json`."""

CHALICE_WORKER_MAPPING = "ingest_worker-sqs-event-source"
"""Chalice's name of the ingest_worker function's work-queue mapping in `chalice.tf.json`."""

CHALICE_WORKER = "IngestWorker"
"""Chalice's logical id of the ingest_worker function in its SAM template."""


def infra_template(spec: StackSpec) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for resource in stack_resources(spec):
        resources.update(resource.cloudformation())
        outputs.update(resource.outputs())
    # the alarms and the dashboard (infra/monitoring.py); the topic is already in the stack
    monitoring = cloudformation_resources(spec.settings, spec.stage)
    resources.update({name: value for name, value in monitoring.items() if name != ALARM_TOPIC})
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"MooVitamix pipeline, stage {spec.stage}: what Chalice does not create",
        "Resources": resources,
        "Outputs": outputs,
    }


def sam_merge_template(spec: StackSpec) -> dict[str, Any]:
    template = infra_template(spec)
    template["Resources"].update(sam_event_overrides(spec, Attr(FAILURE_QUEUE), STREAM))
    # Chalice's SQS event names the work queue by ARN only: wait for the queue to exist
    template["Resources"][CHALICE_WORKER] = {"DependsOn": [WORK_QUEUE]}
    return template


def add_to_terraform(terraform: dict[str, Any], spec: StackSpec, infra_file: str) -> None:
    """Add the infrastructure stack and the trigger's failure settings to Chalice's tf.json.

    `infra_file` is the stand-alone template's file name, next to `chalice.tf.json`.
    """
    resources = terraform.setdefault("resource", {})
    resources.setdefault("aws_cloudformation_stack", {})[TERRAFORM_STACK] = {
        "name": names.infra_stack(spec.prefix),
        "template_body": '${file("${path.module}/' + infra_file + '")}',
    }
    mappings = resources.get("aws_lambda_event_source_mapping", {})
    if CHALICE_LOAD_MAPPING not in mappings:
        raise KeyError(
            f"chalice.tf.json has no aws_lambda_event_source_mapping.{CHALICE_LOAD_MAPPING}; "
            "did the load function's trigger change?"
        )
    queue_arn = (
        "${aws_cloudformation_stack." + TERRAFORM_STACK + '.outputs["' + FAILURE_QUEUE + 'Arn"]}'
    )
    mapping = mappings[CHALICE_LOAD_MAPPING]
    mapping.update(KinesisEventSourceSettings.from_spec(spec).terraform_arguments(queue_arn))
    mapping["depends_on"] = [f"aws_cloudformation_stack.{TERRAFORM_STACK}"]
    if CHALICE_WORKER_MAPPING not in mappings:
        raise KeyError(
            f"chalice.tf.json has no aws_lambda_event_source_mapping.{CHALICE_WORKER_MAPPING}; "
            "did the ingest_worker function's trigger change?"
        )
    # the work queue is created by the stack; the mapping names it by ARN only
    mappings[CHALICE_WORKER_MAPPING]["depends_on"] = [f"aws_cloudformation_stack.{TERRAFORM_STACK}"]
    _fix_log_groups(resources, spec)
    _fix_rule_names(resources, spec)


def _fix_log_groups(resources: dict[str, Any], spec: StackSpec) -> None:
    """Name Chalice's log groups as Lambda does, and create them before their functions.

    Chalice's Terraform generator names a function's log group after its resource name
    (`ingest-log-group`); Lambda writes to `/aws/lambda/<function name>`.
    """
    groups = resources.get("aws_cloudwatch_log_group", {})
    functions = resources.get("aws_lambda_function", {})
    for function, definition in functions.items():
        key = f"{function}-log-group"
        if key in groups:
            groups[key]["name"] = spec.log_group(function)
            definition["depends_on"] = [f"aws_cloudwatch_log_group.{key}"]


def _fix_rule_names(resources: dict[str, Any], spec: StackSpec) -> None:
    """Name schedule rules as `chalice deploy` does (`<app>-<stage>-<name>`).

    Chalice's Terraform generator names a rule after its resource name alone (`ingest-event`),
    so two stages in one account would share, and fight over, one rule.
    """
    for key, rule in resources.get("aws_cloudwatch_event_rule", {}).items():
        rule["name"] = names.chalice_name(spec.app_name, spec.stage, key)
