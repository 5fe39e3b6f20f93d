"""The VPC side of a stage whose functions reach RDS: VPC endpoints for the AWS services.

The functions that talk to PostgreSQL (`load`, `reconcile`) run in the RDS VPC's private
subnets (`subnet_ids`/`security_group_ids` of `.chalice/config.json`). A function in a VPC
has no route to AWS's public endpoints unless the subnets have a NAT gateway, so either the
subnets route through a NAT, or the stage declares `vpc_endpoints` and the deploy creates:

- gateway endpoints (free, in the route tables) for DynamoDB and S3;
- interface endpoints (private DNS, in the functions' subnets, behind a security group that
  admits HTTPS from the functions' group) for Kinesis, SQS, Secrets Manager, CloudWatch,
  EventBridge and Lambda (the load asks for the run's verdict, and the reconcile function
  continues itself, by invoking the reconcile function).

    "vpc_endpoints": {
      "vpc_id": "vpc-...",
      "route_table_ids": ["rtb-..."],           # the private subnets' route tables
      "security_group_ids": ["sg-..."],         # of the interface endpoints (443 from Lambda)
      "services": ["dynamodb", "s3", ...]       # optional: default all of ENDPOINT_SERVICES
    }

The endpoints are resources of the stack like the others (`infra.provision.BUILDERS`):
applied by `python -m infra.deploy deploy` with boto3 and rendered into the CloudFormation
template (`infra.json`, the SAM and Terraform packages). An endpoint for the same service
that already exists in the VPC without this stage's tag (shared by other workloads) is left
alone, and `destroy` removes only the endpoints the stage created.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from infra.resources import ApplyContext, Change, Resource

if TYPE_CHECKING:
    from infra.spec import StackSpec

EndpointType = Literal["Gateway", "Interface"]

ENDPOINT_SERVICES: dict[str, EndpointType] = {
    "dynamodb": "Gateway",
    "s3": "Gateway",
    "kinesis-streams": "Interface",
    "sqs": "Interface",
    "secretsmanager": "Interface",
    "monitoring": "Interface",  # CloudWatch (PutMetricData)
    "events": "Interface",  # EventBridge (the DatasetUpdated event)
    "lambda": "Interface",  # Lambda Invoke: the load's verdict request, reconcile continuing
}
"""The services the pipeline's functions call, by their VPC endpoint service suffix."""

STAGE_TAG = "moovitamix:stage-prefix"
"""Tag of the endpoints a stage created: only those are updated or deleted by it."""


@dataclass(frozen=True)
class VpcEndpoints:
    """The `vpc_endpoints` section of a stage, with the functions' subnets."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    route_table_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    services: tuple[str, ...] = tuple(ENDPOINT_SERVICES)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], subnet_ids: Sequence[str]) -> VpcEndpoints:
        unknown = sorted(
            set(section) - {"vpc_id", "route_table_ids", "security_group_ids", "services"}
        )
        if unknown:
            raise ValueError(f"vpc_endpoints: unknown keys {unknown}")
        services = tuple(section.get("services") or ENDPOINT_SERVICES)
        wrong = sorted(set(services) - set(ENDPOINT_SERVICES))
        if wrong:
            raise ValueError(
                f"vpc_endpoints.services: unknown {wrong} (known: {', '.join(ENDPOINT_SERVICES)})"
            )
        endpoints = cls(
            vpc_id=str(section.get("vpc_id") or ""),
            subnet_ids=tuple(subnet_ids),
            route_table_ids=tuple(section.get("route_table_ids") or ()),
            security_group_ids=tuple(section.get("security_group_ids") or ()),
            services=services,
        )
        missing = [
            name
            for name, needed, value in (
                ("vpc_id", True, endpoints.vpc_id),
                ("route_table_ids", endpoints.gateways, endpoints.route_table_ids),
                ("security_group_ids", endpoints.interfaces, endpoints.security_group_ids),
                ("the functions' subnet_ids", endpoints.interfaces, endpoints.subnet_ids),
            )
            if needed and not value
        ]
        if missing:
            raise ValueError(f"vpc_endpoints needs {', '.join(missing)}")
        return endpoints

    @property
    def gateways(self) -> list[str]:
        return [name for name in self.services if ENDPOINT_SERVICES[name] == "Gateway"]

    @property
    def interfaces(self) -> list[str]:
        return [name for name in self.services if ENDPOINT_SERVICES[name] == "Interface"]


def endpoints_of_stage(
    section: Mapping[str, Any], subnet_ids: Sequence[str]
) -> VpcEndpoints | None:
    """The stage's endpoints, or None when it declares none (its subnets use a NAT)."""
    config = section.get("vpc_endpoints")
    if not config:
        return None
    return VpcEndpoints.from_config(config, subnet_ids)


def logical_id(service: str) -> str:
    return "VpcEndpoint" + "".join(part.capitalize() for part in service.split("-"))


@dataclass(frozen=True)
class VpcEndpoint:
    """One VPC endpoint (gateway or interface) of one AWS service."""

    logical_id: str
    service: str
    endpoints: VpcEndpoints
    stage_prefix: str

    @property
    def kind(self) -> EndpointType:
        return ENDPOINT_SERVICES[self.service]

    @property
    def label(self) -> str:
        return f"vpc endpoint {self.service} ({self.kind.lower()}) in {self.endpoints.vpc_id}"

    def _service_name(self, ctx: ApplyContext) -> str:
        region = ctx.client("ec2").meta.region_name
        return f"com.amazonaws.{region}.{self.service}"

    def _existing(self, ctx: ApplyContext) -> dict[str, Any] | None:
        response = ctx.client("ec2").describe_vpc_endpoints(
            Filters=[
                {"Name": "vpc-id", "Values": [self.endpoints.vpc_id]},
                {"Name": "service-name", "Values": [self._service_name(ctx)]},
            ]
        )
        live = [
            endpoint
            for endpoint in response.get("VpcEndpoints", [])
            if str(endpoint.get("State", "")).lower() not in ("deleted", "deleting", "failed")
        ]
        ours = [endpoint for endpoint in live if self._is_ours(endpoint)]
        return (ours or live or [None])[0]

    def _is_ours(self, endpoint: Mapping[str, Any]) -> bool:
        tags = {tag["Key"]: tag["Value"] for tag in endpoint.get("Tags", [])}
        return tags.get(STAGE_TAG) == self.stage_prefix

    def apply(self, ctx: ApplyContext) -> Change:
        ec2 = ctx.client("ec2")
        existing = self._existing(ctx)
        if existing is not None and not self._is_ours(existing):
            ctx.attributes[self.logical_id] = {"Ref": existing["VpcEndpointId"]}
            return Change(self.label, "unchanged", ["exists, not managed by this stage"])
        if existing is None:
            arguments: dict[str, Any] = {
                "VpcEndpointType": self.kind,
                "VpcId": self.endpoints.vpc_id,
                "ServiceName": self._service_name(ctx),
                "TagSpecifications": [
                    {
                        "ResourceType": "vpc-endpoint",
                        "Tags": [{"Key": STAGE_TAG, "Value": self.stage_prefix}],
                    }
                ],
            }
            if self.kind == "Gateway":
                arguments["RouteTableIds"] = list(self.endpoints.route_table_ids)
            else:
                arguments["SubnetIds"] = list(self.endpoints.subnet_ids)
                arguments["SecurityGroupIds"] = list(self.endpoints.security_group_ids)
                arguments["PrivateDnsEnabled"] = True
            created = ec2.create_vpc_endpoint(**arguments)["VpcEndpoint"]
            ctx.attributes[self.logical_id] = {"Ref": created["VpcEndpointId"]}
            return Change(self.label, "created")
        endpoint_id = existing["VpcEndpointId"]
        ctx.attributes[self.logical_id] = {"Ref": endpoint_id}
        if self.kind == "Gateway":
            wanted, have, key = (
                self.endpoints.route_table_ids,
                existing.get("RouteTableIds", []),
                "RouteTableIds",
            )
        else:
            wanted, have, key = (
                self.endpoints.subnet_ids,
                existing.get("SubnetIds", []),
                "SubnetIds",
            )
        add, remove = sorted(set(wanted) - set(have)), sorted(set(have) - set(wanted))
        if not add and not remove:
            return Change(self.label, "unchanged")
        ec2.modify_vpc_endpoint(
            VpcEndpointId=endpoint_id,
            **({f"Add{key}": add} if add else {}),
            **({f"Remove{key}": remove} if remove else {}),
        )
        return Change(self.label, "updated", [f"{key}: +{add} -{remove}"])

    def delete(self, ctx: ApplyContext) -> Change:
        existing = self._existing(ctx)
        if existing is None or not self._is_ours(existing):
            return Change(self.label, "absent")
        ctx.client("ec2").delete_vpc_endpoints(VpcEndpointIds=[existing["VpcEndpointId"]])
        return Change(self.label, "deleted")

    def cloudformation(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "VpcEndpointType": self.kind,
            "VpcId": self.endpoints.vpc_id,
            "ServiceName": {"Fn::Sub": f"com.amazonaws.${{AWS::Region}}.{self.service}"},
        }
        if self.kind == "Gateway":
            properties["RouteTableIds"] = list(self.endpoints.route_table_ids)
        else:
            properties["SubnetIds"] = list(self.endpoints.subnet_ids)
            properties["SecurityGroupIds"] = list(self.endpoints.security_group_ids)
            properties["PrivateDnsEnabled"] = True
        return {self.logical_id: {"Type": "AWS::EC2::VPCEndpoint", "Properties": properties}}

    def outputs(self) -> dict[str, Any]:
        return {}


def vpc_endpoint_resources(spec: StackSpec) -> list[Resource]:
    """The stage's VPC endpoints (none without a `vpc_endpoints` section)."""
    if spec.vpc_endpoints is None:
        return []
    return [
        VpcEndpoint(logical_id(service), service, spec.vpc_endpoints, spec.prefix)
        for service in spec.vpc_endpoints.services
    ]
