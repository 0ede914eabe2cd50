"""The ``aws`` backend: IAM users with access keys, created on demand under a lease.

Paths (relative to the mount): ``config/root``, ``config/lease``, ``roles/<name>``,
``creds/<name>`` and the seed page's shorthand ``<name>``. boto3 is imported here only,
and this module only when an aws mount is used.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, ClassVar
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from backends.contract import MountView, PathRules
from backends.errors import InvalidRequestError, NoHandlerError, UpstreamError
from backends.request import Request, Response
from backends.ttl import lease_settings, parse_duration

_CLIENT_CONFIG = Config(
    retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20
)


class AwsBackend:
    paths: ClassVar[PathRules] = PathRules(calls_out=True)

    def __init__(self) -> None:
        self._clients: dict[tuple[str, ...], Any] = {}

    def handle(self, view: MountView, request: Request) -> Response:
        path, op = request.path.rstrip("/"), request.operation
        if path == "config/root" and op == "write":
            return self.write_root(view, request.data)
        if path == "config/lease":
            if op == "write":
                return self.write_lease(view, request.data)
            if op == "read":
                return Response(data=view.get("config/lease"))
        if path == "roles" and op == "list":
            return Response(data={"keys": view.list("roles/")})
        if path.startswith("roles/"):
            return self.role(view, request, path.removeprefix("roles/"))
        if op == "read" and path.startswith("creds/"):
            return self.issue(view, path.removeprefix("creds/"))
        if op == "read" and path and "/" not in path:  # the seed's `vault read aws/deploy`
            return self.issue(view, path)
        raise InvalidRequestError(f"unsupported path: {op} {view.mount.path}{request.path}")

    # ---- configuration -------------------------------------------------------------------

    def write_root(self, view: MountView, data: dict[str, Any]) -> Response:
        missing = [k for k in ("access_key", "secret_key") if not data.get(k)]
        if missing:
            raise InvalidRequestError(f"missing {' and '.join(missing)}")
        endpoint = str(data.get("endpoint") or data.get("iam_endpoint") or "")  # 0.5's, 1.x's
        if endpoint and urlparse(endpoint).scheme not in ("http", "https"):
            raise InvalidRequestError("endpoint must be an http:// or https:// URL")
        config = {
            "access_key": str(data["access_key"]),
            "secret_key": str(data["secret_key"]),
            "region": str(data.get("region") or "us-east-1"),
            "endpoint": endpoint,
        }
        view.put("config/root", config)
        return Response()

    def write_lease(self, view: MountView, data: dict[str, Any]) -> Response:
        view.put("config/lease", lease_settings(data))
        return Response()

    def role(self, view: MountView, request: Request, name: str) -> Response:
        if not name or "/" in name:
            raise InvalidRequestError("a role name is required")
        key = f"roles/{name}"
        if request.operation == "read":
            return Response(data=view.get(key))
        if request.operation == "delete":
            if view.get(key) is not None:
                view.delete(key)
            return Response()
        if request.operation != "write":
            raise InvalidRequestError(f"unsupported operation: {request.operation}")
        view.put(key, _role(request.data))
        return Response()

    # ---- credentials ---------------------------------------------------------------------

    def issue(self, view: MountView, role_name: str) -> Response:
        role = view.get(f"roles/{role_name}")
        if role is None:
            raise NoHandlerError(f"role '{role_name}' not found")
        iam = self._client(view)
        lease_config = view.get("config/lease") or {}
        username = f"vault-{role_name}-{int(time.time())}-{secrets.token_hex(4)}"[:64]
        intent = view.record_intent("create_user", {"username": username})
        try:
            iam.create_user(UserName=username)
            if "policy" in role:
                iam.put_user_policy(
                    UserName=username, PolicyName=role_name, PolicyDocument=role["policy"]
                )
            for arn in role.get("arns") or ([role["arn"]] if "arn" in role else []):
                iam.attach_user_policy(UserName=username, PolicyArn=arn)
            key = iam.create_access_key(UserName=username)["AccessKey"]
        except (BotoCoreError, ClientError) as exc:
            error = _describe(exc)
            try:
                delete_user(iam, username)
            except (BotoCoreError, ClientError):
                raise UpstreamError(f"error creating IAM user: {error}") from None
            view.complete_intent(intent, "failed")
            view.commit()
            raise UpstreamError(f"error creating IAM user: {error}") from None
        access_key, secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        lease_id, ttl = view.issue_lease(
            {"username": username, "access_key": access_key, "secret_key": secret_key},
            ttl=parse_duration(lease_config.get("lease") or 0),
            max_ttl=parse_duration(lease_config.get("lease_max") or 0),
        )
        view.complete_intent(intent, "done")
        return Response(
            data={"access_key": access_key, "secret_key": secret_key},
            lease_id=lease_id,
            lease_duration=ttl,
            renewable=True,
        )

    def revoke(self, view: MountView, internal: dict[str, Any]) -> None:
        try:
            delete_user(self._client(view), internal["username"])
        except (BotoCoreError, ClientError) as exc:
            raise UpstreamError(_describe(exc)) from None

    def renew(self, view: MountView, internal: dict[str, Any], expires: int) -> None:
        """An IAM access key has no end of its own: the lease alone says when it goes."""

    def roll_back(self, view: MountView, action: str, data: dict[str, Any]) -> None:
        if action == "create_user":
            self.revoke(view, data)

    def _client(self, view: MountView) -> Any:
        root = view.get("config/root")
        if root is None:
            raise InvalidRequestError(
                f"root credentials are not configured: write {view.mount.path}config/root"
            )
        settings = (root["access_key"], root["secret_key"], root["region"], root["endpoint"])
        client = self._clients.get(settings)
        if client is None:
            client = self._clients[settings] = boto3.client(
                "iam",
                aws_access_key_id=root["access_key"],
                aws_secret_access_key=root["secret_key"],
                region_name=root["region"],
                endpoint_url=root["endpoint"] or None,
                config=_CLIENT_CONFIG,
            )
        return client


def _role(data: dict[str, Any]) -> dict[str, Any]:
    """A role as stored: an inline ``policy`` and/or managed policy ``arns``. Vault 0.5's
    shape (``policy`` or ``arn``) and 1.x's (``credential_type=iam_user``,
    ``policy_document``, ``policy_arns``) are both taken."""
    kind = str(data.get("credential_type") or "iam_user")
    if kind != "iam_user":
        raise InvalidRequestError(f"credential_type {kind!r} is not supported (iam_user)")
    policy = data.get("policy_document") or data.get("policy")
    arns = data.get("policy_arns") or data.get("arn") or []
    if isinstance(arns, str):
        arns = [a.strip() for a in arns.split(",") if a.strip()]
    if not isinstance(arns, list) or not all(isinstance(a, str) for a in arns):
        raise InvalidRequestError("policy_arns must be a list of ARNs")
    if not policy and not arns:
        raise InvalidRequestError("give a policy (inline JSON) or policy ARNs")
    if data.get("policy") and data.get("arn"):
        raise InvalidRequestError("give exactly one of policy (inline JSON) or arn")
    role: dict[str, Any] = {}
    if policy:
        try:
            document = json.loads(policy) if isinstance(policy, str) else policy
        except ValueError:
            raise InvalidRequestError("policy is not valid JSON") from None
        if not isinstance(document, dict):
            raise InvalidRequestError("policy must be a JSON object")
        role["policy"] = json.dumps(document, separators=(",", ":"))
    for arn in arns:
        if not arn.startswith("arn:"):
            raise InvalidRequestError("arn must start with 'arn:'")
    if len(arns) == 1 and "policy" not in role and "policy_arns" not in data:
        role["arn"] = arns[0]  # Vault 0.5's shape, as stored before 1.x's was taken
    elif arns:
        role["arns"] = list(arns)
    return role


def delete_user(iam: Any, username: str) -> None:
    """Delete an IAM user and everything attached to it; a user already gone is fine."""
    try:
        for key in iam.list_access_keys(UserName=username)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=username, AccessKeyId=key["AccessKeyId"])
        for name in iam.list_user_policies(UserName=username)["PolicyNames"]:
            iam.delete_user_policy(UserName=username, PolicyName=name)
        for policy in iam.list_attached_user_policies(UserName=username)["AttachedPolicies"]:
            iam.detach_user_policy(UserName=username, PolicyArn=policy["PolicyArn"])
        for group in iam.list_groups_for_user(UserName=username)["Groups"]:
            iam.remove_user_from_group(GroupName=group["GroupName"], UserName=username)
        iam.delete_user(UserName=username)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
            raise


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return " ".join(str(exc).split())
