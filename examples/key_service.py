#!/usr/bin/env python3
"""An example key service that behaves like the key API of an AI-model gateway.

keywheel rotates keys that a service issues through its admin API. This file
is such a service, small enough to read, so that users can try a rotation on
their own machine and the tests have a real process to rotate against. It
uses only the Python 3.11 standard library.

Running it
----------

    export KEYSERVICE_ADMIN_TOKEN=choose-a-long-random-token
    python3 examples/key_service.py --port 8080 \\
        --state-file /tmp/keys.json --bootstrap-key-file /tmp/app.env \\
        --consumer-env-file /tmp/app.env --consumer-var GATEWAY_API_KEY

Options:

    --port N                 port to listen on; 0 picks a free port
    --host ADDRESS           IP address to bind (default 127.0.0.1)
    --port-file PATH         write the bound port to PATH (atomically)
    --state-file PATH        keep keys across restarts in PATH (JSON, 0600)
    --bootstrap-key-file PATH
                             when there is no state file yet, create one key
                             with scopes models:read and chat:write and write
                             `GATEWAY_API_KEY=<secret>` to PATH (0600)
    --propagation-delay S    keys created through the API are rejected for
                             their first S seconds (default 0)
    --admin-token-env NAME   environment variable with the admin token
                             (default KEYSERVICE_ADMIN_TOKEN); start fails
                             when it is unset or empty
    --consumer-env-file PATH, --consumer-var NAME, --consumer-rate PER_SECOND
                             run a simulated consumer (see below)

At start the service prints `listening on http://HOST:PORT` on stderr.
After that, stderr gets one log line per request with the method, the path
without its query string, the status, the key id and the injected fault,
if any. Secrets, request bodies and the Authorization header are never
logged. The process that starts the service must read or redirect its
stderr, because the service blocks when that pipe is full.

The bootstrap key is usable at once, whatever the propagation delay, so a
demo starts from a working key. The state file stores each key with the
SHA-256 hash of its secret and its timestamps in Unix seconds.

SIGTERM and SIGINT stop the service cleanly: it stops accepting requests,
stops the consumer, saves the state file and exits with status 0.

Admin API
---------

Every admin call needs `Authorization: Bearer <admin token>` and gets 401
otherwise. Errors are JSON: `{"error": {"code": "...", "message": "..."}}`.
Validation errors (400, code `invalid_field`) also carry `"param"`, the
field at fault, which the message names too.

    POST   /v1/keys               create a key; 201 with the key and "secret"
    GET    /v1/keys               list keys: {"data": [...]}, oldest first
    GET    /v1/keys/{id}          one key
    PATCH  /v1/keys/{id}          change name, scopes, limits, allowlist,
                                  expiry or metadata; metadata is replaced
                                  as a whole
    POST   /v1/keys/{id}/disable  status becomes "disabled" (idempotent)
    POST   /v1/keys/{id}/enable   status becomes "active" (idempotent)
    DELETE /v1/keys/{id}          204, then 404 for that id

Create body (only "name" is required):

    {"name": "billing-app",
     "scopes": ["models:read", "chat:write"],
     "rate_limit_per_minute": 60,        positive integer, or null for none
     "monthly_quota": 100000,            positive integer, or null for none
     "ip_allowlist": ["127.0.0.1/32"],   CIDRs; empty or null allows any IP
     "expires_at": "2030-01-01T00:00:00Z",  RFC 3339, or null; a time in
                                         the past makes an expired key
     "metadata": {"team": "billing"}}    string values only

List filters: `?name=NAME`, `?status=active|disabled` and
`?metadata.KEY=VALUE`, combined with AND.

A key object has `id` (`key_` + 16 hex digits), `name`, `prefix` (the first
12 characters of the secret), `status`, `scopes`, `rate_limit_per_minute`,
`monthly_quota`, `ip_allowlist`, `expires_at`, `metadata`, `created_at`,
`last_used_at` and `usage_this_month`. The secret (`sk_live_` + 40 random
letters and digits) is returned only by the create call. The service keeps
only its SHA-256 hash, in memory and in the state file, with one exception:
the idempotency replay cache.

Idempotency: a create call may send an `Idempotency-Key` header (1 to 255
printable ASCII characters). Within 24 hours, the same key with the same
body replays the first response (same id and secret, status 201, header
`Idempotent-Replayed: true`), even if the key was deleted since. The same
key with a different body gets 409 `idempotency_key_reused`. Only
successful creates are cached. The cache is kept in memory only, so it
contains the secrets of keys created in the last 24 hours and is lost on
restart.

Protected API
-------------

What applications call, with `Authorization: Bearer <secret>`:

    GET  /v1/models              needs scope models:read
    POST /v1/chat/completions    needs scope chat:write

The checks, in order: 401 `invalid_api_key` when the key is missing,
unknown, disabled, expired, or younger than the propagation delay; 403
`ip_not_allowed` when the client IP is outside a non-empty allowlist; 403
`insufficient_scope`; 429 `quota_exceeded` when the successful calls this
calendar month (UTC) reached the monthly quota; 429 `rate_limited`, with
`Retry-After` in seconds, when the successful calls in the last 60 seconds
reached the per-minute limit. Only successful calls count towards usage,
limits and `last_used_at`.

`GET /metrics` (no auth) returns Prometheus text with the counter
`keyservice_requests_total{endpoint, status, key_id}` for protected calls
only (key_id is "unknown" when the key is not recognised), the gauge
`keyservice_keys{status}` and `keyservice_up 1`.

Simulated consumer
------------------

With `--consumer-env-file PATH --consumer-var NAME`, a background thread
calls `GET /v1/models` on this service `--consumer-rate` times a second
(default 10). Before each call it re-reads NAME from the .env file (lines
`NAME=value`, optionally prefixed by `export `, with the value optionally in
single or double quotes). When the file or the variable is missing, it
calls with no key and gets 401. The metrics then show the error ratio that
real consumers of a rotated key would see. The consumer logs only when the
outcome of its calls changes.

Fault controls (admin token required)
-------------------------------------

    POST /_control/errors        {"rate": 0.0..1.0}
        That fraction of protected calls get 500 `internal_error`,
        drawn before any other check.
    POST /_control/faults        {"operation": OP, "mode": MODE, "count": N}
        The next N admin calls of OP (create, get, list, disable, enable,
        delete) misbehave. N defaults to 1. A fault is used up by an
        authenticated call of that operation, whatever its outcome. Several
        faults for one operation are used in the order they were added.
        Modes:
          status500       500 JSON error; the operation is not performed
          html            502 HTML page; the operation is not performed
          missing_id      the operation is performed, but the key objects in
                          the response lack "id" (not for delete)
          missing_secret  the key is created, but the 201 response lacks
                          "secret" (create only)
          timeout         the operation is performed, then the response is
                          sent after 30 seconds (sooner on shutdown)
          reset           the operation is performed, then the connection
                          is reset (TCP RST) without a response
        The idempotency cache always stores the correct response, so a
        retry with the same Idempotency-Key gets the full response.
    POST /_control/reset-faults
        Clears all pending faults and sets the error rate back to 0.
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import datetime
import hashlib
import hmac
import http.client
import http.server
import ipaddress
import json
import logging
import math
import os
import random
import re
import secrets
import signal
import socket
import string
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("keyservice")

SECRET_PREFIX = "sk_live_"
SECRET_RANDOM_LENGTH = 40
SECRET_ALPHABET = string.ascii_letters + string.digits
PREFIX_LENGTH = 12

KEY_STATUSES = ("active", "disabled")
BOOTSTRAP_SCOPES = ["models:read", "chat:write"]
BOOTSTRAP_VARIABLE = "GATEWAY_API_KEY"

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
RATE_WINDOW_SECONDS = 60.0
FAULT_DELAY_SECONDS = 30.0
MAX_BODY_BYTES = 1024 * 1024
STATE_FORMAT_VERSION = 1

# An RFC 3339 date-time. datetime.fromisoformat alone would also accept ISO
# 8601 forms that RFC 3339 excludes, such as a date without a time.
RFC3339_PATTERN = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)

# The fields of a create body, with the defaults for those left out.
CREATE_DEFAULTS: dict[str, Any] = {
    "scopes": [],
    "rate_limit_per_minute": None,
    "monthly_quota": None,
    "ip_allowlist": [],
    "expires_at": None,
    "metadata": {},
}

FAULT_OPERATIONS = ("create", "get", "list", "disable", "enable", "delete")
FAULT_MODES = (
    "status500",
    "html",
    "missing_id",
    "missing_secret",
    "timeout",
    "reset",
)

MODELS = [
    {"id": "example-small", "object": "model", "owned_by": "keyservice"},
    {"id": "example-large", "object": "model", "owned_by": "keyservice"},
]


# --------------------------------------------------------------------------
# Errors and responses
# --------------------------------------------------------------------------


class ApiError(Exception):
    """An error that the service sends to the client as a JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def to_response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        return json_response(self.status, {"error": error}, self.headers)


def invalid_field(param: str, message: str) -> ApiError:
    return ApiError(
        400,
        "invalid_field",
        f"invalid field '{param}': {message}",
        param=param,
    )


@dataclasses.dataclass
class Response:
    """An HTTP response that a route method returns for dispatch to send."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # The decoded JSON body, kept so that faults can remove fields from it.
    payload: Any = None


def json_response(
    status: int, payload: Any, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, headers=dict(headers or {}), payload=payload)


# --------------------------------------------------------------------------
# Time, secrets and request validation
# --------------------------------------------------------------------------


def format_timestamp(unix_seconds: float | None) -> str | None:
    """Format Unix seconds as an RFC 3339 UTC time with whole seconds."""
    if unix_seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(int(unix_seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> float:
    """Parse an RFC 3339 date-time into Unix seconds, or raise ValueError."""
    if not RFC3339_PATTERN.fullmatch(text):
        raise ValueError("not an RFC 3339 date-time")
    normalized = text.upper().replace(" ", "T")
    return datetime.datetime.fromisoformat(normalized).timestamp()


def month_of(unix_seconds: float) -> str:
    """Return the UTC calendar month, as YYYY-MM, that contains the time."""
    moment = datetime.datetime.fromtimestamp(unix_seconds, datetime.UTC)
    return moment.strftime("%Y-%m")


def generate_secret() -> str:
    random_part = "".join(
        secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_RANDOM_LENGTH)
    )
    return SECRET_PREFIX + random_part


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid_field("name", "must be a non-empty string")
    return value


def validate_scopes(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_field("scopes", "must be a list of strings or null")
    seen: set[str] = set()
    for index, scope in enumerate(value):
        param = f"scopes[{index}]"
        if not isinstance(scope, str) or not scope:
            raise invalid_field(param, "must be a non-empty string")
        if any(character.isspace() for character in scope):
            raise invalid_field(param, "must not contain whitespace")
        if scope in seen:
            raise invalid_field(param, f"duplicate scope '{scope}'")
        seen.add(scope)
    return list(value)


def validate_limit(param: str, value: Any) -> int | None:
    """Validate a positive integer limit, where null means no limit."""
    if value is None:
        return None

    # bool is a subclass of int in Python, so true would pass as 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_field(param, "must be a positive integer or null")
    return value


def validate_allowlist(value: Any) -> list[str]:
    """Validate a list of CIDRs and return them in normalized form."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_field("ip_allowlist", "must be a list of CIDRs or null")
    networks = []
    for index, cidr in enumerate(value):
        param = f"ip_allowlist[{index}]"
        if not isinstance(cidr, str):
            raise invalid_field(param, "must be a CIDR string")
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as error:
            raise invalid_field(param, f"invalid CIDR: {error}") from None
        networks.append(str(network))
    return networks


def validate_expiry(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_field("expires_at", "must be an RFC 3339 string or null")
    try:
        return parse_timestamp(value)
    except ValueError:
        raise invalid_field(
            "expires_at",
            f"'{value}' is not an RFC 3339 date-time such as "
            "2030-01-01T00:00:00Z",
        ) from None


def validate_metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_field("metadata", "must be an object of strings")
    for name, item in value.items():
        if not name:
            raise invalid_field("metadata", "keys must not be empty")
        if not isinstance(item, str):
            raise invalid_field(f"metadata.{name}", "must be a string")
    return dict(value)


FIELD_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "name": validate_name,
    "scopes": validate_scopes,
    "rate_limit_per_minute": lambda value: validate_limit(
        "rate_limit_per_minute", value
    ),
    "monthly_quota": lambda value: validate_limit("monthly_quota", value),
    "ip_allowlist": validate_allowlist,
    "expires_at": validate_expiry,
    "metadata": validate_metadata,
}


def validate_key_fields(body: Any, *, creating: bool) -> dict[str, Any]:
    """Validate a create or update body and return the normalized fields.

    A create needs "name", and absent optional fields get their defaults.
    An update changes only the fields present. Raises ApiError (400) naming
    the first field at fault.
    """
    if not isinstance(body, dict):
        raise ApiError(
            400, "invalid_json", "request body must be a JSON object"
        )
    for name in body:
        if name == "status":
            raise invalid_field(
                "status", "use POST /v1/keys/{id}/disable or /enable"
            )
        if name not in FIELD_VALIDATORS:
            raise invalid_field(name, "unknown field")
    if creating and "name" not in body:
        raise invalid_field("name", "is required")

    fields = {}
    if creating:
        # Copies, so that no two records share a default list or dict.
        fields = copy.deepcopy(CREATE_DEFAULTS)
    for name, value in body.items():
        fields[name] = FIELD_VALIDATORS[name](value)
    return fields


def parse_json_body(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(
            400, "invalid_json", f"request body is not valid JSON: {error}"
        ) from None


def canonical_body_hash(body: Any) -> str:
    """Hash a parsed JSON body so that key order and spacing do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------
# The key store
# --------------------------------------------------------------------------


@dataclasses.dataclass
class KeyRecord:
    """One issued key as the service stores it: the secret only as a hash."""

    id: str
    name: str
    secret_sha256: str
    prefix: str
    status: str
    scopes: list[str]
    rate_limit_per_minute: int | None
    monthly_quota: int | None
    ip_allowlist: list[str]
    expires_at: float | None
    metadata: dict[str, str]
    created_at: float
    # Calls with the key are rejected before this time, which models the
    # propagation delay of new keys.
    usable_from: float
    last_used_at: float | None = None
    usage_month: str = ""
    usage_count: int = 0

    def usage_in(self, month: str) -> int:
        return self.usage_count if self.usage_month == month else 0

    def to_public(self) -> dict[str, Any]:
        """Return the key object that the admin API sends."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "status": self.status,
            "scopes": list(self.scopes),
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "monthly_quota": self.monthly_quota,
            "ip_allowlist": list(self.ip_allowlist),
            "expires_at": format_timestamp(self.expires_at),
            "metadata": dict(self.metadata),
            "created_at": format_timestamp(self.created_at),
            "last_used_at": format_timestamp(self.last_used_at),
            "usage_this_month": self.usage_in(month_of(time.time())),
        }

    def to_state(self) -> dict[str, Any]:
        """Return the state-file form, with every timestamp in Unix seconds."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, entry: dict[str, Any]) -> KeyRecord:
        """Build a record from its state-file form, or raise ValueError."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(entry) - names
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        try:
            record = cls(**entry)
        except TypeError as error:
            raise ValueError(str(error)) from None
        if record.status not in KEY_STATUSES:
            raise ValueError(f"invalid status '{record.status}'")
        if len(record.secret_sha256) != 64:
            raise ValueError("secret_sha256 must be 64 hex digits")
        return record


@dataclasses.dataclass
class IdempotentCreate:
    """A cached create response for one Idempotency-Key."""

    body_hash: str
    stored_at: float
    # The full 201 payload, secret included. This is the only place the
    # service keeps a secret, and only in memory.
    payload: dict[str, Any]


@dataclasses.dataclass
class CallOutcome:
    """The result of checking a protected call: the key id for the metrics
    label, and the error to send, or None when the call is allowed."""

    key_id: str
    error: ApiError | None = None


class KeyStore:
    """All issued keys, the idempotency cache and the per-key rate windows.

    Every method takes the shared service lock, so each request reads and
    leaves a consistent state. Admin changes are saved to the state file
    (when there is one) before the method returns.
    """

    def __init__(
        self,
        lock: threading.Lock,
        state_file: str | None,
        propagation_delay: float,
    ) -> None:
        self._lock = lock
        self._state_file = state_file
        self._propagation_delay = propagation_delay
        self._records: dict[str, KeyRecord] = {}
        self._ids_by_hash: dict[str, str] = {}
        self._idempotent_creates: dict[str, IdempotentCreate] = {}
        # Monotonic times of the successful calls in the last minute, per key.
        self._recent_calls: dict[str, collections.deque[float]] = {}

    # ---- persistence ----

    def load(self) -> bool:
        """Load the state file, and return False when it does not exist yet.

        Raises ValueError with the reason when the file is invalid.
        """
        if self._state_file is None:
            return False
        try:
            with open(self._state_file, encoding="utf-8") as file:
                document = json.load(file)
        except FileNotFoundError:
            return False
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(str(error)) from None

        if not isinstance(document, dict):
            raise ValueError("the top level must be a JSON object")
        if document.get("version") != STATE_FORMAT_VERSION:
            raise ValueError(f"expected version {STATE_FORMAT_VERSION}")
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise ValueError("'keys' must be a list")

        with self._lock:
            for index, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    raise ValueError(f"keys[{index}] must be an object")
                try:
                    self._add(KeyRecord.from_state(entry))
                except ValueError as error:
                    raise ValueError(f"keys[{index}]: {error}") from None
        return True

    def save(self) -> None:
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        """Write the state file atomically. The caller must hold the lock.

        NOTE: usage counters and last_used_at change on every successful
        call but are written only with the next admin change or at
        shutdown, so a crash loses the usage since then.
        """
        if self._state_file is None:
            return
        document = {
            "version": STATE_FORMAT_VERSION,
            "keys": [record.to_state() for record in self._records.values()],
        }
        data = json.dumps(document, indent=2, sort_keys=True) + "\n"
        write_file_atomically(self._state_file, data.encode(), 0o600)

    def _commit(self) -> None:
        """Save after an admin change, turning a failed write into a 500.

        NOTE: the change stays in memory even when the write fails, so the
        state file lags behind until the next successful save.
        """
        try:
            self._save_locked()
        except OSError as error:
            LOG.error(
                "failed to save state file %s: %s", self._state_file, error
            )
            raise ApiError(
                500, "state_not_saved", "the change could not be saved"
            ) from None

    def _add(self, record: KeyRecord) -> None:
        self._records[record.id] = record
        self._ids_by_hash[record.secret_sha256] = record.id

    # ---- admin operations ----

    def create(
        self,
        fields: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        body_hash: str = "",
        bootstrap: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Create a key, and return the 201 payload and whether it is a replay.

        With an idempotency key, a cached payload for the same body is
        returned instead, and a different body raises 409. Keys created
        with bootstrap=True are usable at once, whatever the propagation
        delay, so a demo starts from a working key.
        """
        with self._lock:
            if idempotency_key is not None:
                cached = self._cached_create(idempotency_key, body_hash)
                if cached is not None:
                    return cached, True

            record, secret = self._new_record(fields, bootstrap)
            self._add(record)
            payload = record.to_public()
            payload["secret"] = secret
            if idempotency_key is not None:
                self._idempotent_creates[idempotency_key] = IdempotentCreate(
                    body_hash, time.monotonic(), dict(payload)
                )
            self._commit()
            return payload, False

    def _cached_create(
        self, idempotency_key: str, body_hash: str
    ) -> dict[str, Any] | None:
        self._drop_expired_idempotency_keys()
        cached = self._idempotent_creates.get(idempotency_key)
        if cached is None:
            return None
        if cached.body_hash != body_hash:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request "
                "body. Use a new Idempotency-Key for a different request.",
            )
        return dict(cached.payload)

    def _drop_expired_idempotency_keys(self) -> None:
        oldest_kept = time.monotonic() - IDEMPOTENCY_TTL_SECONDS
        expired = [
            key
            for key, cached in self._idempotent_creates.items()
            if cached.stored_at < oldest_kept
        ]
        for key in expired:
            del self._idempotent_creates[key]

    def _new_record(
        self, fields: dict[str, Any], bootstrap: bool
    ) -> tuple[KeyRecord, str]:
        secret = generate_secret()
        key_id = "key_" + secrets.token_hex(8)
        while key_id in self._records:
            key_id = "key_" + secrets.token_hex(8)
        now = time.time()
        delay = 0.0 if bootstrap else self._propagation_delay
        record = KeyRecord(
            id=key_id,
            secret_sha256=hash_secret(secret),
            prefix=secret[:PREFIX_LENGTH],
            status="active",
            created_at=now,
            usable_from=now + delay,
            **fields,
        )
        return record, secret

    def get(self, key_id: str) -> dict[str, Any]:
        with self._lock:
            return self._find(key_id).to_public()

    def list_keys(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Return the keys matching every filter, oldest first.

        Filters are "name", "status" and "metadata.<key>", already checked
        by the caller.
        """
        with self._lock:
            records = sorted(
                self._records.values(),
                key=lambda record: (record.created_at, record.id),
            )
            return [
                record.to_public()
                for record in records
                if record_matches(record, filters)
            ]

    def update(self, key_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record = self._find(key_id)
            for name, value in fields.items():
                setattr(record, name, value)
            self._commit()
            return record.to_public()

    def set_status(self, key_id: str, status: str) -> dict[str, Any]:
        with self._lock:
            record = self._find(key_id)
            if record.status != status:
                record.status = status
                self._commit()
            return record.to_public()

    def delete(self, key_id: str) -> None:
        with self._lock:
            record = self._find(key_id)
            del self._records[key_id]
            del self._ids_by_hash[record.secret_sha256]
            self._recent_calls.pop(key_id, None)
            self._commit()

    def count_by_status(self) -> dict[str, int]:
        with self._lock:
            counts = {status: 0 for status in KEY_STATUSES}
            for record in self._records.values():
                counts[record.status] += 1
            return counts

    def _find(self, key_id: str) -> KeyRecord:
        record = self._records.get(key_id)
        if record is None:
            raise ApiError(404, "key_not_found", f"no key with id '{key_id}'")
        return record

    # ---- protected calls ----

    def authorize_call(
        self, secret: str | None, client_ip: str, scope: str
    ) -> CallOutcome:
        """Check a protected call and, when it is allowed, count its use.

        Checking and counting happen under one lock, so concurrent calls
        cannot together pass a rate limit or quota.
        """
        with self._lock:
            record = self._lookup(secret)
            if record is None:
                error = ApiError(401, "invalid_api_key", "invalid API key")
                return CallOutcome("unknown", error)
            error = self._check_call(record, client_ip, scope)
            if error is None:
                self._count_use(record)
            return CallOutcome(record.id, error)

    def identify(self, secret: str | None) -> str:
        """Return the id of the key with this secret, or "unknown"."""
        with self._lock:
            record = self._lookup(secret)
            return record.id if record else "unknown"

    def _lookup(self, secret: str | None) -> KeyRecord | None:
        if not secret:
            return None
        key_id = self._ids_by_hash.get(hash_secret(secret))
        return self._records.get(key_id) if key_id else None

    def _check_call(
        self, record: KeyRecord, client_ip: str, scope: str
    ) -> ApiError | None:
        now = time.time()
        if record.status != "active":
            return ApiError(401, "invalid_api_key", "this API key is disabled")
        if record.expires_at is not None and now >= record.expires_at:
            return ApiError(401, "invalid_api_key", "this API key has expired")
        if now < record.usable_from:
            return ApiError(
                401, "invalid_api_key", "this API key is not active yet"
            )
        if not ip_allowed(client_ip, record.ip_allowlist):
            return ApiError(
                403,
                "ip_not_allowed",
                f"client IP {client_ip} is not in this key's allowlist",
            )
        if scope not in record.scopes:
            return ApiError(
                403,
                "insufficient_scope",
                f"this API key lacks the scope '{scope}'",
            )
        quota = record.monthly_quota
        if quota is not None and record.usage_in(month_of(now)) >= quota:
            return ApiError(
                429, "quota_exceeded", "this API key used its monthly quota"
            )
        return self._check_rate(record)

    def _check_rate(self, record: KeyRecord) -> ApiError | None:
        limit = record.rate_limit_per_minute
        if limit is None:
            return None
        now = time.monotonic()
        calls = self._recent_calls.setdefault(record.id, collections.deque())
        while calls and calls[0] <= now - RATE_WINDOW_SECONDS:
            calls.popleft()
        if len(calls) < limit:
            return None
        wait = calls[0] + RATE_WINDOW_SECONDS - now
        return ApiError(
            429,
            "rate_limited",
            f"rate limit of {limit} calls per minute reached",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    def _count_use(self, record: KeyRecord) -> None:
        now = time.time()
        month = month_of(now)
        if record.usage_month != month:
            record.usage_month = month
            record.usage_count = 0
        record.usage_count += 1
        record.last_used_at = now
        if record.rate_limit_per_minute is not None:
            calls = self._recent_calls.setdefault(
                record.id, collections.deque()
            )
            calls.append(time.monotonic())


def record_matches(record: KeyRecord, filters: dict[str, str]) -> bool:
    for name, expected in filters.items():
        if name == "name" and record.name != expected:
            return False
        if name == "status" and record.status != expected:
            return False
        if name.startswith("metadata."):
            metadata_key = name[len("metadata.") :]
            if record.metadata.get(metadata_key) != expected:
                return False
    return True


def ip_allowed(client_ip: str, allowlist: list[str]) -> bool:
    """Check the client IP against the CIDRs. An empty list allows any IP."""
    if not allowlist:
        return True
    address = ipaddress.ip_address(client_ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(cidr) for cidr in allowlist)


def write_file_atomically(path: str, data: bytes, mode: int) -> None:
    """Write data to path through a temporary file and a rename.

    Readers see the old or the new file, never a partial one. The file gets
    exactly the given mode, whatever the umask.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode
    )
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise

    # Sync the directory too, so the rename survives a power loss.
    directory_descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_descriptor)
    finally:
        os.close(directory_descriptor)


# --------------------------------------------------------------------------
# Fault controls and metrics
# --------------------------------------------------------------------------


@dataclasses.dataclass
class PendingFault:
    """A fault armed for the next `remaining` calls of one operation."""

    mode: str
    remaining: int


class FaultPlan:
    """Faults that tests arm through /_control/: pending admin-call faults
    per operation, and the fraction of protected calls that get a 500."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._pending: dict[str, collections.deque[PendingFault]] = {}
        self._error_rate = 0.0

    def set_error_rate(self, rate: float) -> None:
        with self._lock:
            self._error_rate = rate

    def should_fail_call(self) -> bool:
        with self._lock:
            rate = self._error_rate
        return rate > 0 and random.random() < rate

    def add(self, operation: str, mode: str, count: int) -> None:
        with self._lock:
            queue = self._pending.setdefault(operation, collections.deque())
            queue.append(PendingFault(mode, count))

    def take(self, operation: str) -> str | None:
        """Use up one pending fault for the operation and return its mode."""
        with self._lock:
            queue = self._pending.get(operation)
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                queue.popleft()
            return fault.mode

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
            self._error_rate = 0.0


class RequestMetrics:
    """Counters of protected calls by endpoint, status and key id."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._requests: collections.Counter[tuple[str, str, str]] = (
            collections.Counter()
        )

    def count(self, endpoint: str, status: int, key_id: str) -> None:
        with self._lock:
            self._requests[(endpoint, str(status), key_id)] += 1

    def render(self, keys_by_status: dict[str, int]) -> str:
        """Render all metrics in the Prometheus text exposition format."""
        with self._lock:
            requests = sorted(self._requests.items())
        lines = [
            "# HELP keyservice_requests_total Protected API calls by "
            "endpoint, status and key id.",
            "# TYPE keyservice_requests_total counter",
        ]
        for (endpoint, status, key_id), value in requests:
            labels = format_labels(
                endpoint=endpoint, status=status, key_id=key_id
            )
            lines.append(f"keyservice_requests_total{labels} {value}")
        lines += [
            "# HELP keyservice_keys Keys by status.",
            "# TYPE keyservice_keys gauge",
        ]
        for status, value in sorted(keys_by_status.items()):
            labels = format_labels(status=status)
            lines.append(f"keyservice_keys{labels} {value}")
        lines += [
            "# HELP keyservice_up Whether the service is running.",
            "# TYPE keyservice_up gauge",
            "keyservice_up 1",
        ]
        return "\n".join(lines) + "\n"


def format_labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return (
            value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
        )

    pairs = ",".join(
        f'{name}="{escape(value)}"' for name, value in labels.items()
    )
    return "{" + pairs + "}"


# --------------------------------------------------------------------------
# HTTP handling
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Route:
    """One API route: its method, path pattern and handler method name.

    `operation` names the admin operation that /_control/faults can target;
    `admin` marks routes that need the admin token.
    """

    method: str
    pattern: re.Pattern[str]
    handler: str
    admin: bool = False
    operation: str | None = None


def route(method: str, path: str, handler: str, **options: Any) -> Route:
    pattern = re.compile(path.replace("{id}", r"(?P<key_id>[^/]+)"))
    return Route(method, pattern, handler, **options)


ROUTES = [
    route("POST", "/v1/keys", "create_key", admin=True, operation="create"),
    route("GET", "/v1/keys", "list_keys", admin=True, operation="list"),
    route("GET", "/v1/keys/{id}", "get_key", admin=True, operation="get"),
    route("PATCH", "/v1/keys/{id}", "update_key", admin=True),
    route(
        "DELETE", "/v1/keys/{id}", "delete_key", admin=True, operation="delete"
    ),
    route(
        "POST",
        "/v1/keys/{id}/disable",
        "disable_key",
        admin=True,
        operation="disable",
    ),
    route(
        "POST",
        "/v1/keys/{id}/enable",
        "enable_key",
        admin=True,
        operation="enable",
    ),
    route("GET", "/v1/models", "list_models"),
    route("POST", "/v1/chat/completions", "create_chat_completion"),
    route("GET", "/metrics", "render_metrics"),
    route("POST", "/_control/errors", "set_error_rate", admin=True),
    route("POST", "/_control/faults", "add_fault", admin=True),
    route("POST", "/_control/reset-faults", "reset_faults", admin=True),
]

# The scope each protected endpoint needs.
PROTECTED_SCOPES = {
    "/v1/models": "models:read",
    "/v1/chat/completions": "chat:write",
}


class KeyServiceServer(http.server.ThreadingHTTPServer):
    """The HTTP server, with the shared service state for its handlers."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        store: KeyStore,
        faults: FaultPlan,
        metrics: RequestMetrics,
        admin_token: str,
    ) -> None:
        if ipaddress.ip_address(address[0]).version == 6:
            self.address_family = socket.AF_INET6
        super().__init__(address, KeyServiceHandler)
        self.store = store
        self.faults = faults
        self.metrics = metrics
        self.admin_token = admin_token
        # Set at shutdown, so that fault delays and the consumer end early.
        self.stopping = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an error raised outside the route methods, such as a client
        that resets an idle keep-alive connection."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            LOG.info("connection from %s closed: %s", client_address[0], error)
            return
        LOG.exception("error handling a connection from %s", client_address[0])


class KeyServiceHandler(http.server.BaseHTTPRequestHandler):
    """Routes one request, applies faults, sends the response and logs it."""

    server: KeyServiceServer
    protocol_version = "HTTP/1.1"
    server_version = "keyservice/1"
    # Seconds an idle keep-alive connection stays open.
    timeout = 60

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_PATCH(self) -> None:
        self.dispatch()

    def do_DELETE(self) -> None:
        self.dispatch()

    # ---- dispatch ----

    def parse_request(self) -> bool:
        # Reset the per-request log fields, because a keep-alive connection
        # reuses this handler for several requests.
        self.started = time.monotonic()
        self.log_key_id = "-"
        self.log_fault = ""
        self.route_path = "-"
        if not super().parse_request():
            return False
        self.route_path = urllib.parse.urlsplit(self.path).path
        return True

    def dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.query = url.query
        try:
            self.body = self.read_body()
            response = self.route_request(url.path)
        except ApiError as error:
            response = error.to_response()
        except Exception:
            LOG.exception("unexpected error in %s %s", self.command, url.path)
            response = ApiError(
                500, "internal_error", "unexpected server error"
            ).to_response()
        if response is not None:
            self.send(response)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(
                411, "length_required", "send the body with Content-Length"
            )
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            # The unread body would corrupt the next request on this
            # connection, so close it.
            self.close_connection = True
            raise ApiError(
                413,
                "body_too_large",
                f"request body must be at most {MAX_BODY_BYTES} bytes",
            )
        return self.rfile.read(length)

    def route_request(self, path: str) -> Response | None:
        """Find the route, check the admin token, apply faults, run it.

        Returns None when a fault already dealt with the connection.
        """
        matched = find_route(self.command, path)
        if matched is None:
            raise ApiError(404, "not_found", f"no route for {path}")
        route_entry, match = matched
        if route_entry.admin:
            self.check_admin_token()

        handler = getattr(self, route_entry.handler)
        arguments = match.groupdict()
        if route_entry.operation is None:
            return handler(**arguments)

        fault = self.server.faults.take(route_entry.operation)
        return self.run_with_fault(fault, lambda: handler(**arguments))

    def check_admin_token(self) -> None:
        token = bearer_token(self.headers.get("Authorization"))
        expected = self.server.admin_token
        if token is None or not hmac.compare_digest(
            token.encode(), expected.encode()
        ):
            raise ApiError(
                401,
                "invalid_admin_token",
                "send the admin token as 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # ---- faults ----

    def run_with_fault(
        self, fault: str | None, run: Callable[[], Response]
    ) -> Response | None:
        """Run an admin operation with the armed fault, if any."""
        if fault is not None:
            self.log_fault = f" fault={fault}"
        if fault == "status500":
            raise ApiError(500, "internal_error", "injected server error")
        if fault == "html":
            return html_error_page()

        try:
            response = run()
        except ApiError as error:
            response = error.to_response()

        if fault in ("missing_id", "missing_secret") and response.status < 300:
            response = strip_field(response, fault.removeprefix("missing_"))
        if fault == "timeout":
            self.server.stopping.wait(FAULT_DELAY_SECONDS)
        if fault == "reset":
            self.reset_connection()
            return None
        return response

    def reset_connection(self) -> None:
        """Close the connection with a TCP reset and no response."""
        # A zero linger time makes close() send RST instead of FIN.
        self.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.connection.close()
        self.close_connection = True
        self.log_line("reset")

    # ---- sending and logging ----

    def send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.status != 204:
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            LOG.info("client closed the connection before the response")
            self.close_connection = True

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Write the request's one log line when its response starts.

        The line never contains headers, bodies or the query string, so no
        secret and no Authorization value reaches the log.
        """
        self.log_line(str(code))

    def log_line(self, outcome: str) -> None:
        elapsed = (time.monotonic() - self.started) * 1000
        LOG.info(
            "%s %s %s key_id=%s%s %.1fms",
            self.command,
            self.route_path,
            outcome,
            self.log_key_id,
            self.log_fault,
            elapsed,
        )

    def log_error(self, format: str, *args: Any) -> None:
        # send_error() calls this and then log_request(), which already
        # writes the request's one line.
        pass

    def log_message(self, format: str, *args: Any) -> None:
        LOG.info("%s: %s", self.address_string(), format % args)

    # ---- admin API ----

    def create_key(self) -> Response:
        body = parse_json_body(self.body)
        fields = validate_key_fields(body, creating=True)
        idempotency_key = self.headers.get("Idempotency-Key")
        if (
            idempotency_key is not None
            and not IDEMPOTENCY_KEY_PATTERN.fullmatch(idempotency_key)
        ):
            raise ApiError(
                400,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
                param="Idempotency-Key",
            )
        payload, replayed = self.server.store.create(
            fields,
            idempotency_key=idempotency_key,
            body_hash=canonical_body_hash(body),
        )
        self.log_key_id = payload["id"]
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return json_response(201, payload, headers)

    def list_keys(self) -> Response:
        filters = parse_list_filters(self.query)
        return json_response(
            200, {"data": self.server.store.list_keys(filters)}
        )

    def get_key(self, key_id: str) -> Response:
        self.log_key_id = key_id
        return json_response(200, self.server.store.get(key_id))

    def update_key(self, key_id: str) -> Response:
        self.log_key_id = key_id
        fields = validate_key_fields(
            parse_json_body(self.body), creating=False
        )
        return json_response(200, self.server.store.update(key_id, fields))

    def disable_key(self, key_id: str) -> Response:
        self.log_key_id = key_id
        return json_response(
            200, self.server.store.set_status(key_id, "disabled")
        )

    def enable_key(self, key_id: str) -> Response:
        self.log_key_id = key_id
        return json_response(
            200, self.server.store.set_status(key_id, "active")
        )

    def delete_key(self, key_id: str) -> Response:
        self.log_key_id = key_id
        self.server.store.delete(key_id)
        return Response(204)

    # ---- protected API ----

    def list_models(self) -> Response:
        return self.protected_call(
            lambda: json_response(200, {"object": "list", "data": MODELS})
        )

    def create_chat_completion(self) -> Response:
        def respond() -> Response:
            request = parse_json_body(self.body)
            model = "example-small"
            if isinstance(request, dict) and isinstance(
                request.get("model"), str
            ):
                model = request["model"]
            return json_response(200, chat_completion(model))

        return self.protected_call(respond)

    def protected_call(self, respond: Callable[[], Response]) -> Response:
        """Authorize a protected call, run it and count it in the metrics."""
        secret = bearer_token(self.headers.get("Authorization"))
        store = self.server.store
        scope = PROTECTED_SCOPES[self.route_path]

        if self.server.faults.should_fail_call():
            key_id = store.identify(secret)
            response = ApiError(
                500, "internal_error", "injected server error"
            ).to_response()
        else:
            outcome = store.authorize_call(secret, self.client_ip(), scope)
            key_id = outcome.key_id
            if outcome.error is not None:
                response = outcome.error.to_response()
            else:
                try:
                    response = respond()
                except ApiError as error:
                    response = error.to_response()

        if response.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        self.log_key_id = key_id
        self.server.metrics.count(self.route_path, response.status, key_id)
        return response

    def client_ip(self) -> str:
        return self.client_address[0]

    # ---- metrics and controls ----

    def render_metrics(self) -> Response:
        text = self.server.metrics.render(self.server.store.count_by_status())
        return Response(
            200,
            text.encode(),
            content_type="text/plain; version=0.0.4; charset=utf-8",
        )

    def set_error_rate(self) -> Response:
        body = parse_json_body(self.body)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "body must be a JSON object")
        rate = body.get("rate")
        valid = isinstance(rate, (int, float)) and not isinstance(rate, bool)
        if not valid or not 0.0 <= rate <= 1.0:
            raise invalid_field("rate", "must be a number from 0.0 to 1.0")
        self.server.faults.set_error_rate(float(rate))
        return json_response(200, {"rate": float(rate)})

    def add_fault(self) -> Response:
        operation, mode, count = validate_fault(parse_json_body(self.body))
        self.server.faults.add(operation, mode, count)
        return json_response(
            200, {"operation": operation, "mode": mode, "count": count}
        )

    def reset_faults(self) -> Response:
        self.server.faults.reset()
        return Response(204)


def find_route(method: str, path: str) -> tuple[Route, re.Match[str]] | None:
    """Find the route for a request, or raise 405 when only the method is
    wrong."""
    allowed = []
    for route_entry in ROUTES:
        match = route_entry.pattern.fullmatch(path)
        if match is None:
            continue
        if route_entry.method == method:
            return route_entry, match
        allowed.append(route_entry.method)
    if allowed:
        raise ApiError(
            405,
            "method_not_allowed",
            f"{method} is not allowed on {path}",
            headers={"Allow": ", ".join(allowed)},
        )
    return None


def bearer_token(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def parse_list_filters(query: str) -> dict[str, str]:
    """Parse and check the list filters, or raise 400 naming the bad one."""
    filters: dict[str, str] = {}
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    for name, value in pairs:
        if name not in ("name", "status") and not name.startswith("metadata."):
            raise invalid_field(name, "unknown filter")
        if name in filters:
            raise invalid_field(name, "filter given more than once")
        if name == "status" and value not in KEY_STATUSES:
            raise invalid_field("status", "must be 'active' or 'disabled'")
        filters[name] = value
    return filters


def validate_fault(body: Any) -> tuple[str, str, int]:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    operation = body.get("operation")
    mode = body.get("mode")
    count = body.get("count", 1)
    if operation not in FAULT_OPERATIONS:
        raise invalid_field("operation", f"must be one of {FAULT_OPERATIONS}")
    if mode not in FAULT_MODES:
        raise invalid_field("mode", f"must be one of {FAULT_MODES}")
    if mode == "missing_secret" and operation != "create":
        raise invalid_field("mode", "missing_secret applies to create only")
    if mode == "missing_id" and operation == "delete":
        raise invalid_field(
            "mode", "delete returns no body to remove 'id' from"
        )
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise invalid_field("count", "must be a positive integer")
    return operation, mode, count


def strip_field(response: Response, field: str) -> Response:
    """Return a copy of a JSON response with the field removed from every
    key object in it."""
    payload = response.payload
    items = payload.get("data") if isinstance(payload, dict) else None
    objects = items if isinstance(items, list) else [payload]
    for item in objects:
        if isinstance(item, dict):
            item.pop(field, None)
    return json_response(response.status, payload, response.headers)


def html_error_page() -> Response:
    page = (
        "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
        "<body><h1>502 Bad Gateway</h1><p>The upstream server did not "
        "respond.</p></body></html>\n"
    )
    return Response(
        502, page.encode(), content_type="text/html; charset=utf-8"
    )


def chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + secrets.token_hex(8),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "This is a canned reply from the example "
                    "key service.",
                },
                "finish_reason": "stop",
            }
        ],
    }


# --------------------------------------------------------------------------
# Simulated consumer
# --------------------------------------------------------------------------


def parse_env_line(line: str) -> tuple[str, str] | None:
    """Parse one .env line into (name, value), or return None for blank
    lines, comments and lines without an assignment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("export "):
        text = text[len("export ") :].lstrip()
    name, separator, value = text.partition("=")
    name = name.strip()
    if not separator or not name:
        return None
    return name, unquote_env_value(value.strip())


def unquote_env_value(value: str) -> str:
    """Remove single or double quotes. Inside double quotes, \\" and \\\\
    stand for " and \\.

    An unquoted value ends at " #", which starts a comment.
    """
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\([\"\\])", r"\1", value[1:-1])
    comment = value.find(" #")
    return value[:comment].rstrip() if comment >= 0 else value


def read_env_variable(path: str, name: str) -> str | None:
    """Return the last value assigned to name in the .env file, or None when
    the file or the variable is missing or the file cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    value = None
    for line in lines:
        parsed = parse_env_line(line)
        if parsed is not None and parsed[0] == name:
            value = parsed[1]
    return value


class SimulatedConsumer(threading.Thread):
    """Calls GET /v1/models on the service at a fixed rate with the key
    currently in a .env file, like an application that reloads its config.
    """

    def __init__(
        self,
        host: str,
        port: int,
        env_file: str,
        variable: str,
        rate: float,
        stopping: threading.Event,
    ) -> None:
        super().__init__(name="consumer", daemon=True)
        self._host = host
        self._port = port
        self._env_file = env_file
        self._variable = variable
        self._interval = 1.0 / rate
        self._stopping = stopping
        self._last_outcome: str | None = None

    def run(self) -> None:
        LOG.info(
            "consumer started: %s from %s, %.1f calls per second",
            self._variable,
            self._env_file,
            1.0 / self._interval,
        )
        next_call = time.monotonic()
        while not self._stopping.is_set():
            self._report(self._call_once())

            # Schedule from the planned time, so that the time each call
            # takes does not lower the rate.
            next_call = max(next_call + self._interval, time.monotonic())
            self._stopping.wait(next_call - time.monotonic())

    def _call_once(self) -> str:
        """Make one call and describe its outcome, without the key."""
        secret = read_env_variable(self._env_file, self._variable)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        connection = http.client.HTTPConnection(
            self._host, self._port, timeout=5
        )
        try:
            connection.request("GET", "/v1/models", headers=headers)
            response = connection.getresponse()

            # Closing with the body unread would make the kernel send a TCP
            # reset to the service.
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            return f"call failed ({type(error).__name__})"
        finally:
            connection.close()
        key_state = "a key" if secret else "no key"
        return f"status {status} with {key_state}"

    def _report(self, outcome: str) -> None:
        # Logging only changes keeps the log readable at 10 calls a second.
        if outcome != self._last_outcome:
            LOG.info("consumer: %s", outcome)
            self._last_outcome = outcome


# --------------------------------------------------------------------------
# Start-up and shutdown
# --------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Example key service for trying keywheel rotations.",
    )
    add_server_options(parser)
    add_key_options(parser)
    add_consumer_options(parser)
    arguments = parser.parse_args(argv)
    check_arguments(parser, arguments)
    return arguments


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        required=True,
        help="port to listen on; 0 picks a free one",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="IP address to bind (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--port-file", help="write the bound port to this file"
    )
    parser.add_argument(
        "--admin-token-env",
        default="KEYSERVICE_ADMIN_TOKEN",
        help="environment variable that contains the admin token "
        "(default: KEYSERVICE_ADMIN_TOKEN)",
    )


def add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-file", help="keep keys across restarts in this JSON file"
    )
    parser.add_argument(
        "--bootstrap-key-file",
        help="with no state file yet, create one key and write "
        f"{BOOTSTRAP_VARIABLE}=<secret> to this file",
    )
    parser.add_argument(
        "--propagation-delay",
        type=float,
        default=0.0,
        help="seconds during which new keys are rejected (default: 0)",
    )


def add_consumer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--consumer-env-file", help=".env file the simulated consumer reads"
    )
    parser.add_argument(
        "--consumer-var",
        help="variable in that file that contains the consumer's key",
    )
    parser.add_argument(
        "--consumer-rate",
        type=float,
        default=10.0,
        help="consumer calls per second (default: 10)",
    )


def check_arguments(
    parser: argparse.ArgumentParser, arguments: argparse.Namespace
) -> None:
    """Reject argument values and combinations that argparse cannot check."""
    try:
        ipaddress.ip_address(arguments.host)
    except ValueError:
        parser.error(f"--host must be an IP address, got '{arguments.host}'")
    if not 0 <= arguments.port <= 65535:
        parser.error("--port must be from 0 to 65535")
    if not math.isfinite(arguments.propagation_delay) or (
        arguments.propagation_delay < 0
    ):
        parser.error("--propagation-delay must be 0 or more seconds")
    if bool(arguments.consumer_env_file) != bool(arguments.consumer_var):
        parser.error("--consumer-env-file and --consumer-var go together")
    if (
        not math.isfinite(arguments.consumer_rate)
        or arguments.consumer_rate <= 0
    ):
        parser.error("--consumer-rate must be more than 0 calls per second")


def read_admin_token(variable: str) -> str:
    token = os.environ.get(variable, "")
    if not token:
        sys.exit(
            f"error: the environment variable {variable} is not set. Set it "
            "to the admin token that admin calls must send as "
            "'Authorization: Bearer <token>'."
        )
    return token


def create_bootstrap_key(store: KeyStore, path: str) -> None:
    """Create the initial key and write its secret to path in .env form."""
    fields = validate_key_fields(
        {"name": "bootstrap", "scopes": BOOTSTRAP_SCOPES}, creating=True
    )
    payload, _ = store.create(fields, bootstrap=True)
    line = f"{BOOTSTRAP_VARIABLE}={payload['secret']}\n"
    try:
        write_file_atomically(path, line.encode(), 0o600)
    except OSError as error:
        sys.exit(
            f"error: cannot write bootstrap key file {path}: {error}. "
            f"Delete key {payload['id']} or the state file before retrying."
        )
    LOG.info(
        "bootstrap key %s created, secret written to %s", payload["id"], path
    )


def service_url(host: str, port: int) -> str:
    if ipaddress.ip_address(host).version == 6:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"


def consumer_target(host: str) -> str:
    """Return the address the consumer calls: the bound one, or loopback
    when the service listens on all addresses."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def install_signal_handlers(server: KeyServiceServer) -> None:
    """Stop the server on SIGTERM and SIGINT.

    serve_forever() runs in the main thread, which also runs signal
    handlers, and shutdown() waits for serve_forever() to return, so the
    handler calls shutdown() from another thread.
    """

    def request_stop(signal_number: int, _frame: Any) -> None:
        if server.stopping.is_set():
            return
        LOG.info("received %s, stopping", signal.Signals(signal_number).name)
        server.stopping.set()
        threading.Thread(target=server.shutdown, name="shutdown").start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def load_store(
    arguments: argparse.Namespace, lock: threading.Lock
) -> tuple[KeyStore, bool]:
    """Create the store from the state file, and return it and whether the
    file existed."""
    store = KeyStore(lock, arguments.state_file, arguments.propagation_delay)
    try:
        loaded = store.load()
    except ValueError as error:
        sys.exit(
            f"error: state file {arguments.state_file} is invalid: {error}. "
            "Fix or move it."
        )
    if loaded:
        LOG.info("loaded state file %s", arguments.state_file)
    return store, loaded


def bind_server(
    arguments: argparse.Namespace,
    store: KeyStore,
    lock: threading.Lock,
    admin_token: str,
) -> KeyServiceServer:
    address = (arguments.host, arguments.port)
    try:
        return KeyServiceServer(
            address, store, FaultPlan(lock), RequestMetrics(lock), admin_token
        )
    except OSError as error:
        where = f"{arguments.host}:{arguments.port}"
        sys.exit(f"error: cannot listen on {where}: {error}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    admin_token = read_admin_token(arguments.admin_token_env)

    # One lock guards all mutable state: keys, faults and metrics.
    lock = threading.Lock()
    store, loaded = load_store(arguments, lock)
    server = bind_server(arguments, store, lock, admin_token)
    port = server.server_address[1]

    # Install the handlers before the port file announces the service, so
    # a signal sent as soon as the port file appears still stops it cleanly.
    install_signal_handlers(server)

    # Bootstrap only after the bind succeeded, so a failed start leaves no
    # key behind.
    if arguments.bootstrap_key_file and loaded:
        LOG.info("state file exists, so no bootstrap key was created")
    elif arguments.bootstrap_key_file:
        create_bootstrap_key(store, arguments.bootstrap_key_file)
    if arguments.port_file:
        write_file_atomically(arguments.port_file, f"{port}\n".encode(), 0o644)

    consumer = None
    if arguments.consumer_env_file:
        consumer = SimulatedConsumer(
            consumer_target(arguments.host),
            port,
            arguments.consumer_env_file,
            arguments.consumer_var,
            arguments.consumer_rate,
            server.stopping,
        )
        consumer.start()

    # This exact line is the start-up signal that scripts may wait for.
    print(f"listening on {service_url(arguments.host, port)}", file=sys.stderr)
    sys.stderr.flush()
    server.serve_forever()

    server.stopping.set()
    if consumer is not None:
        consumer.join(timeout=10)
    server.server_close()
    try:
        store.save()
    except OSError as error:
        LOG.error(
            "failed to save state file %s: %s", arguments.state_file, error
        )
        return 1
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
