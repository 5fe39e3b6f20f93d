"""The private S3 bucket (the quarantine): public access blocked, encrypted, TLS only,
objects expiring."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infra.resources.base import (
    ApplyContext,
    Attr,
    Change,
    contains,
    deletion_policy,
    error_is,
)

_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
_ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
_OWNERSHIP = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


LIFECYCLE_RULE_ID = "expire-quarantined-records"


def tls_only_policy(bucket_arn: str) -> dict[str, Any]:
    """Deny every request to the bucket and its objects that does not come over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


@dataclass(frozen=True)
class PrivateBucket:
    """A bucket nobody outside the account reads: public access blocked, encrypted at rest.

    `expiration_days`: objects are deleted that many days after they were written (the
    quarantine holds personal data such as emails; None keeps them). `tls_only`: a bucket
    policy denies any request not made over TLS; off only for an emulator reached over plain
    HTTP, which enforces the policy and would then refuse every request. `retain`: keep the
    bucket and its objects when the stack or the stage is removed (production stages).
    """

    logical_id: str
    name: str
    expiration_days: int | None = None
    tls_only: bool = True
    retain: bool = False

    @property
    def policy_logical_id(self) -> str:
        return f"{self.logical_id}Policy"

    @property
    def lifecycle(self) -> dict[str, Any] | None:
        """The lifecycle configuration as the S3 API takes it."""
        if self.expiration_days is None:
            return None
        return {
            "Rules": [
                {
                    "ID": LIFECYCLE_RULE_ID,
                    "Filter": {"Prefix": ""},
                    "Status": "Enabled",
                    "Expiration": {"Days": self.expiration_days},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }
            ]
        }

    @property
    def label(self) -> str:
        return f"s3 bucket {self.name}"

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.name}"

    def _exists(self, client: Any) -> bool:
        try:
            client.head_bucket(Bucket=self.name)
        except ClientError as error:
            if error_is(error, "404", "NoSuchBucket", "NotFound"):
                return False
            raise
        return True

    def _current(self, client: Any, getter: str, key: str, missing: str) -> Any:
        try:
            return getattr(client, getter)(Bucket=self.name)[key]
        except ClientError as error:
            if error_is(error, missing):
                return None
            raise

    def apply(self, ctx: ApplyContext) -> Change:
        client = ctx.client("s3")
        change = Change(self.label, "unchanged")
        if not self._exists(client):
            region = client.meta.region_name
            if region == "us-east-1":
                client.create_bucket(Bucket=self.name)
            else:
                client.create_bucket(
                    Bucket=self.name, CreateBucketConfiguration={"LocationConstraint": region}
                )
            change.action = "created"
        settings: list[tuple[str, str, str, str, Any, Callable[[], Any]]] = [
            (
                "public access blocked",
                "get_public_access_block",
                "PublicAccessBlockConfiguration",
                "NoSuchPublicAccessBlockConfiguration",
                _PUBLIC_ACCESS_BLOCK,
                lambda: client.put_public_access_block(
                    Bucket=self.name, PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCK
                ),
            ),
            (
                "encryption at rest",
                "get_bucket_encryption",
                "ServerSideEncryptionConfiguration",
                "ServerSideEncryptionConfigurationNotFoundError",
                _ENCRYPTION,
                lambda: client.put_bucket_encryption(
                    Bucket=self.name, ServerSideEncryptionConfiguration=_ENCRYPTION
                ),
            ),
            (
                "object ownership enforced",
                "get_bucket_ownership_controls",
                "OwnershipControls",
                "OwnershipControlsNotFoundError",
                _OWNERSHIP,
                lambda: client.put_bucket_ownership_controls(
                    Bucket=self.name, OwnershipControls=_OWNERSHIP
                ),
            ),
        ]
        for description, getter, key, missing, wanted, put in settings:
            current = self._current(client, getter, key, missing)
            if not contains(current, wanted):
                put()
                if change.action != "created":
                    change.details.append(description)
        self._apply_lifecycle(client, change)
        self._apply_policy(client, change)
        if change.details and change.action == "unchanged":
            change.action = "updated"
        ctx.attributes[self.logical_id] = {"Arn": self.arn, "Ref": self.name}
        return change

    def _apply_lifecycle(self, client: Any, change: Change) -> None:
        wanted = self.lifecycle
        current = self._current(
            client, "get_bucket_lifecycle_configuration", "Rules", "NoSuchLifecycleConfiguration"
        )
        if wanted is None:
            if current:
                client.delete_bucket_lifecycle(Bucket=self.name)
                change.details.append("expiration removed")
            return
        if not contains(current, wanted["Rules"]):
            client.put_bucket_lifecycle_configuration(
                Bucket=self.name, LifecycleConfiguration=wanted
            )
            if change.action != "created":
                change.details.append(f"objects expire after {self.expiration_days} days")

    def _apply_policy(self, client: Any, change: Change) -> None:
        document = self._current(client, "get_bucket_policy", "Policy", "NoSuchBucketPolicy")
        current = json.loads(document) if document else None
        wanted = tls_only_policy(self.arn) if self.tls_only else None
        if current == wanted:
            return
        if wanted is None:
            client.delete_bucket_policy(Bucket=self.name)
            change.details.append("bucket policy removed")
            return
        client.put_bucket_policy(Bucket=self.name, Policy=json.dumps(wanted))
        if change.action != "created":
            change.details.append("TLS-only bucket policy")

    def delete(self, ctx: ApplyContext) -> Change:
        client = ctx.client("s3")
        if not self._exists(client):
            return Change(self.label, "absent")
        if self.retain:
            return Change(self.label, "retained", ["production stage: delete it by hand"])
        removed = 0
        paginator = client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.name):
            doomed = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            for start in range(0, len(doomed), 1000):
                client.delete_objects(
                    Bucket=self.name, Delete={"Objects": doomed[start : start + 1000]}
                )
            removed += len(doomed)
        client.delete_bucket(Bucket=self.name)
        return Change(self.label, "deleted", [f"{removed} objects removed"] if removed else [])

    def cloudformation(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "BucketName": self.name,
            "PublicAccessBlockConfiguration": _PUBLIC_ACCESS_BLOCK,
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "OwnershipControls": _OWNERSHIP,
        }
        if self.expiration_days is not None:
            properties["LifecycleConfiguration"] = {
                "Rules": [
                    {
                        "Id": LIFECYCLE_RULE_ID,
                        "Status": "Enabled",
                        "ExpirationInDays": self.expiration_days,
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            }
        resources: dict[str, Any] = {
            self.logical_id: {
                "Type": "AWS::S3::Bucket",
                **deletion_policy(self.retain),
                "Properties": properties,
            },
        }
        if self.tls_only:
            resources[self.policy_logical_id] = {
                "Type": "AWS::S3::BucketPolicy",
                **deletion_policy(self.retain),
                "Properties": {
                    "Bucket": Attr(self.logical_id, "Ref").cloudformation(),
                    "PolicyDocument": tls_only_policy(self.arn),
                },
            }
        return resources

    def outputs(self) -> dict[str, Any]:
        return {}
