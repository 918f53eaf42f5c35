#!/usr/bin/env python3
"""A keywheel `command` issuer for the example key service.

keywheel starts this program once per issuer operation, writes one JSON
request to its stdin and reads one JSON response from its stdout (protocol
version 1, described in src/issuers/command/mod.rs). It drives the admin API
of examples/key_service.py and uses only the Python 3.11 standard library.

Configuration:
    KEYSERVICE_URL     base URL of the service, from the environment (name it
                       in the playbook's `pass_env`)
    request.credential the admin token, which keywheel sends on stdin from
                       the playbook's `credential_env` or `credential_file`

Operations:
    preflight     finds the key in use: the listed key whose prefix starts
                  the secret the targets hold (`current.secret`)
    create        creates a key with the old key's name, scopes, limits,
                  allowlist, expiry and metadata, tagged with the run id in
                  metadata.keywheel_run, and sends the run's idempotency key
    find_created  lists the keys tagged with the run id and sends the create
                  again with the same idempotency key: the service replays
                  the first response, so the key comes back with its secret
    disable, enable, delete
                  act on `key_id`; deleting a key that is gone succeeds

Exit status: 0 on success, 75 when the service could not be reached or
answered 429 or 5xx (keywheel retries), 1 on any other error. Errors go to
stderr; secrets never do.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PROTOCOL_VERSION = 1
EXIT_TEMPORARY = 75
PREFIX_LENGTH = 12
# The attributes of a key that a new key copies.
COPIED_ATTRIBUTES = (
    "name",
    "scopes",
    "rate_limit_per_minute",
    "monthly_quota",
    "ip_allowlist",
    "expires_at",
    "metadata",
)
RUN_TAG = "keywheel_run"


class Failure(Exception):
    """An error to report on stderr, with the exit status to use."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class KeyService:
    """A client for the admin API of the example key service."""

    def __init__(self, base_url: str, token: str) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token
        # Every URL here is the one the operator configured, so proxies set
        # in the environment are not used.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({})
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        absent_ok: bool = False,
    ) -> Any:
        """Send one admin call and return the decoded JSON response."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._base_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        try:
            with self._opener.open(request, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            if absent_ok and error.code == 404:
                return None
            raise Failure(
                f"{method} {path} failed with status {error.code}: "
                f"{error_message(error)}",
                EXIT_TEMPORARY if error.code == 429 or error.code >= 500 else 1,
            ) from None
        except OSError as error:
            raise Failure(
                f"{method} {path} failed: {error}", EXIT_TEMPORARY
            ) from None
        return json.loads(raw) if raw.strip() else None


def error_message(error: urllib.error.HTTPError) -> str:
    """Return the service's error code and message, never a raw page."""
    try:
        body = json.loads(error.read())
        return f"{body['error']['code']}: {body['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return "a response that is not a JSON error"


def public_key(key: dict[str, Any]) -> dict[str, Any]:
    """Return a key as keywheel's old_key: its id and copied attributes."""
    attributes = {name: key.get(name) for name in COPIED_ATTRIBUTES}
    return {"id": key["id"], "attributes": attributes}


def new_key(payload: dict[str, Any]) -> dict[str, Any]:
    if not payload.get("id") or not payload.get("secret"):
        raise Failure("the create response has no id or no secret")
    return {
        "id": payload["id"],
        "fields": {"secret": payload["secret"]},
        "attributes": {
            name: payload.get(name) for name in COPIED_ATTRIBUTES
        },
    }


def preflight(service: KeyService, request: dict[str, Any]) -> dict[str, Any]:
    secret = request.get("current", {}).get("secret")
    if not secret:
        raise Failure(
            "no target holds the current secret, so the key in use cannot "
            "be found; check the targets' `set` mappings"
        )
    prefix = secret[:PREFIX_LENGTH]
    keys = service.call("GET", "/v1/keys")["data"]
    matches = [key for key in keys if key.get("prefix") == prefix]
    if len(matches) != 1:
        raise Failure(
            f"{len(matches)} keys have the prefix of the current secret; "
            "expected exactly one"
        )
    old = public_key(matches[0])
    return {"old_key": old, "summary": f"old key {old['id']} (by prefix)"}


def create_body(request: dict[str, Any]) -> dict[str, Any]:
    old = request.get("old_key") or {}
    attributes = dict(old.get("attributes") or {})
    if not attributes.get("name"):
        attributes["name"] = "keywheel"
    metadata = dict(attributes.get("metadata") or {})
    metadata[RUN_TAG] = request["run_id"]
    attributes["metadata"] = metadata
    return {name: attributes.get(name) for name in COPIED_ATTRIBUTES}


def create(service: KeyService, request: dict[str, Any]) -> dict[str, Any]:
    payload = service.call(
        "POST",
        "/v1/keys",
        create_body(request),
        headers={"Idempotency-Key": request["idempotency_key"]},
    )
    return {"key": new_key(payload)}


def find_created(
    service: KeyService, request: dict[str, Any]
) -> dict[str, Any]:
    query = urllib.parse.urlencode({f"metadata.{RUN_TAG}": request["run_id"]})
    tagged = [key["id"] for key in service.call("GET", f"/v1/keys?{query}")["data"]]
    if not tagged:
        return {"key": None, "orphan_ids": []}
    try:
        key = create(service, request)["key"]
    except Failure as error:
        # The replay cache is gone (the service restarted): the tagged keys
        # cannot give their secrets again, so keywheel deletes them.
        print(f"replaying the create failed: {error}", file=sys.stderr)
        return {"key": None, "orphan_ids": tagged}
    orphans = [key_id for key_id in tagged if key_id != key["id"]]
    return {"key": key, "orphan_ids": orphans}


def act(service: KeyService, request: dict[str, Any]) -> dict[str, Any]:
    operation = request["operation"]
    key_id = urllib.parse.quote(request["key_id"], safe="")
    if operation == "delete":
        service.call("DELETE", f"/v1/keys/{key_id}", absent_ok=True)
    else:
        service.call("POST", f"/v1/keys/{key_id}/{operation}")
    return {}


OPERATIONS = {
    "preflight": preflight,
    "create": create,
    "find_created": find_created,
    "disable": act,
    "enable": act,
    "delete": act,
}


def main() -> int:
    try:
        request = json.load(sys.stdin)
        if request.get("protocol") != PROTOCOL_VERSION:
            raise Failure(
                f"protocol {request.get('protocol')} is not supported; "
                f"this program speaks version {PROTOCOL_VERSION}"
            )
        handler = OPERATIONS.get(request.get("operation"))
        if handler is None:
            raise Failure(f"unknown operation {request.get('operation')!r}")
        base_url = os.environ.get("KEYSERVICE_URL")
        if not base_url:
            raise Failure(
                "KEYSERVICE_URL is not set; name it in the playbook's pass_env"
            )
        token = request.get("credential")
        if not token:
            raise Failure(
                "the request has no credential; set credential_env in the "
                "playbook to the variable that holds the admin token"
            )
        response = handler(KeyService(base_url, token), request)
    except Failure as error:
        print(f"key_service_command: {error}", file=sys.stderr)
        return error.status
    except (ValueError, KeyError) as error:
        print(f"key_service_command: invalid request: {error}", file=sys.stderr)
        return 1
    json.dump(response, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
