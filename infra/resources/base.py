"""What every declarative resource is and works with: the `Resource` protocol, `Attr`
references between resources, the `ApplyContext` an apply fills, the `Change` it reports,
and the helpers the resources of every service share (waiting, reading AWS errors)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws

Action = Literal["created", "updated", "unchanged", "deleted", "absent", "retained", "kept"]
"""`retained`: a production stage's data store that `destroy` keeps (see `retain` fields)."""


def deletion_policy(retain: bool) -> dict[str, str]:
    """CloudFormation keeps a retained resource when the stack is deleted or replaces it."""
    policy = "Retain" if retain else "Delete"
    return {"DeletionPolicy": policy, "UpdateReplacePolicy": policy}


@dataclass(frozen=True)
class Attr:
    """An attribute of another resource: `Ref` or a `Fn::GetAtt` name such as `Arn`."""

    logical_id: str
    attribute: str = "Arn"

    def cloudformation(self) -> dict[str, Any]:
        if self.attribute == "Ref":
            return {"Ref": self.logical_id}
        return {"Fn::GetAtt": [self.logical_id, self.attribute]}


@dataclass
class Change:
    """What one apply or delete did to one resource."""

    resource: str
    action: Action
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        suffix = f" ({'; '.join(self.details)})" if self.details else ""
        return f"{self.action:<9} {self.resource}{suffix}"


@dataclass
class ApplyContext:
    """Attributes of the resources applied so far (`logical id -> {attribute: value}`)."""

    attributes: dict[str, dict[str, str]] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return aws.client(service)

    def resolve(self, value: Any) -> Any:
        """`value` with every `Attr` replaced by the applied resource's attribute."""
        if isinstance(value, Attr):
            try:
                return self.attributes[value.logical_id][value.attribute]
            except KeyError as error:
                raise KeyError(
                    f"{value.logical_id}.{value.attribute} is not known yet: apply "
                    f"{value.logical_id} before the resources that reference it"
                ) from error
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value


class Resource(Protocol):
    """What every resource offers; builders in `infra.provision.BUILDERS` return these."""

    @property
    def logical_id(self) -> str:
        """CloudFormation logical id, also the key of the resource's applied attributes."""
        ...

    @property
    def label(self) -> str:
        """Kind and name, for reports: `kinesis stream moovitamix-dev-events`."""
        ...

    def apply(self, ctx: ApplyContext) -> Change:
        """Create or update; record attributes in `ctx.attributes[logical_id]`."""
        ...

    def delete(self, ctx: ApplyContext) -> Change: ...

    def cloudformation(self) -> dict[str, Any]:
        """`{logical id: resource definition}`; may hold several (a bucket and its policy)."""
        ...

    def outputs(self) -> dict[str, Any]:
        """CloudFormation outputs worth exporting (ARNs other stacks or Terraform read)."""
        ...


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_is(error: ClientError, *codes: str) -> bool:
    return error_code(error) in codes


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 300.0) -> None:
    """Poll `check` with a short backoff; emulators answer at once, AWS takes seconds."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def contains(current: Any, wanted: Any) -> bool:
    """True when every field of `wanted` is present with the same value in `current`."""
    if isinstance(wanted, Mapping):
        return isinstance(current, Mapping) and all(
            contains(current.get(key), value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(current) == len(wanted)
            and all(contains(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return bool(current == wanted)
