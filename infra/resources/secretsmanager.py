"""The Secrets Manager secret of the PostgreSQL credentials: created once, never overwritten."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from infra.resources.base import ApplyContext, Attr, Change, error_is

MANAGED_BY_TAG: Final = "moovitamix:managed-by"
MANAGED_BY: Final = "infra.deploy"
"""Tag of a secret `Secret.apply` created (and `Secret.delete` may therefore remove)."""


@dataclass(frozen=True)
class Secret:
    """A credentials secret created with a random password and never overwritten afterwards.

    The value is generated here (script) or by CloudFormation (`GenerateSecretString`), never
    written in code or config, never printed. Operators put the real connection values in with
    `aws secretsmanager put-secret-value`; re-applying keeps them.

    A secret this code creates is tagged `MANAGED_BY_TAG`; `delete` removes only such a secret.
    One that already existed (the LocalStack init hook writes the PostgreSQL container's real
    password before any deploy) is used as it is and kept by `destroy`: deleting it would make
    the next deploy create a random password the database does not know.
    """

    logical_id: str
    name: str
    description: str
    username: str

    @property
    def label(self) -> str:
        return f"secret {self.name}"

    def _description(self, client: Any) -> dict[str, Any] | None:
        try:
            return dict(client.describe_secret(SecretId=self.name))
        except ClientError as error:
            if error_is(error, "ResourceNotFoundException"):
                return None
            raise

    def apply(self, ctx: ApplyContext) -> Change:
        client = ctx.client("secretsmanager")
        change = Change(self.label, "unchanged")
        current = self._description(client)
        if current is None:
            value = {"username": self.username, "password": secrets.token_urlsafe(32)}
            client.create_secret(
                Name=self.name,
                Description=self.description,
                SecretString=json.dumps(value),
                Tags=[{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}],
            )
            change.action = "created"
        else:
            if current.get("DeletedDate"):
                client.restore_secret(SecretId=self.name)
                change.details.append("restored from scheduled deletion")
            if current.get("Description", "") != self.description:
                client.update_secret(SecretId=self.name, Description=self.description)
                change.details.append("description")
            if change.details:
                change.action = "updated"
        arn = str((self._description(client) or {})["ARN"])
        ctx.attributes[self.logical_id] = {"Ref": arn}
        return change

    def delete(self, ctx: ApplyContext) -> Change:
        client = ctx.client("secretsmanager")
        current = self._description(client)
        if current is None:
            return Change(self.label, "absent")
        tags = {tag.get("Key"): tag.get("Value") for tag in current.get("Tags", [])}
        if tags.get(MANAGED_BY_TAG) != MANAGED_BY:
            return Change(
                self.label,
                "kept",
                ["not created by the deploy; remove it with `aws secretsmanager delete-secret`"],
            )
        client.delete_secret(SecretId=self.name, ForceDeleteWithoutRecovery=True)
        return Change(self.label, "deleted")

    def cloudformation(self) -> dict[str, Any]:
        return {
            self.logical_id: {
                "Type": "AWS::SecretsManager::Secret",
                "DeletionPolicy": "Delete",
                "UpdateReplacePolicy": "Delete",
                "Properties": {
                    "Name": self.name,
                    "Description": self.description,
                    "GenerateSecretString": {
                        "SecretStringTemplate": json.dumps({"username": self.username}),
                        "GenerateStringKey": "password",
                        "PasswordLength": 43,
                        "ExcludePunctuation": True,
                    },
                },
            }
        }

    def outputs(self) -> dict[str, Any]:
        return {f"{self.logical_id}Arn": {"Value": Attr(self.logical_id, "Ref").cloudformation()}}
