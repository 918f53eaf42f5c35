#!/usr/bin/env python3
"""Kubernetes API emulator for keywheel's tests. It is NOT a Kubernetes API server.

It serves a small part of the Kubernetes REST API over plain HTTP on 127.0.0.1,
with no authentication, so that keywheel's Kubernetes target can be tested
through the real `kube` client (and kubectl) on machines where no cluster can
run. Python 3.11 standard library only; a ThreadingHTTPServer with all state
behind one lock.

    python3 tests/support/k8s_emulator.py --port 0 --port-file PATH \
        [--seed FILE.json] [--rollout-step SECONDS] [--verbose]

Implemented API subset:

- Discovery: GET /version (reports 1.34), /healthz, /livez, /readyz, /api,
  /api/v1, /apis, /apis/apps, /apis/apps/v1. /api and /apis also serve
  aggregated discovery (apidiscovery.k8s.io/v2) when the Accept header requests it.
- core/v1 Namespaces: get, list, watch, create, update, patch, delete.
- core/v1 Secrets and apps/v1 Deployments, StatefulSets and DaemonSets: get,
  list, watch (namespaced and across all namespaces), create, update (PUT),
  patch and delete.
- list and watch honour labelSelector (=, ==, !=, exists, !key, in, notin),
  fieldSelector (metadata.name, metadata.namespace, and type for Secrets),
  limit and continue. watch honours resourceVersion, timeoutSeconds and
  sendInitialEvents. get and list answer a meta.k8s.io/v1 Table or
  PartialObjectMetadata when the Accept header requests it, as kubectl get does.
- Writes honour dryRun=All and fieldValidation (Strict, Warn, Ignore) for
  unknown top-level and metadata fields.
- Bodies are JSON. Protobuf bodies are decoded for Secrets and Namespaces
  only, because kubectl's create secret and create namespace send them.
  Responses are always JSON.
- Every error body is a meta/v1 Status shaped as the real server's.

Behaviour that follows the real server, as far as the author knows it for
Kubernetes 1.3x (it was checked with kubectl 1.32 and kube 5, never against
a live cluster):

- One global resourceVersion counter, bumped by every write, including the
  status writes of the simulated controllers. An update that changes nothing
  keeps the resourceVersion and sends no watch event.
- Secrets: `data` values must be standard base64. A decode error on POST or
  PUT returns 400 BadRequest, on PATCH 422 Invalid on the field "patch"
  (whose message quotes the whole patched object, Secret data included, as
  the real server's does). `stringData` is merged into `data` and never
  stored. `type` defaults to Opaque and is immutable, `immutable: true`
  freezes data, and keys, names and the 1 MiB size limit are validated.
  Secrets and Namespaces have no metadata.generation.
- PUT with a stale metadata.resourceVersion returns 409 Conflict, PUT without
  one is an unconditional update. A PATCH whose result carries a different
  resourceVersion or uid is a precondition and returns 409 on mismatch.
- Workloads: any change of `spec` bumps metadata.generation, and `status`
  sent by clients is ignored. A change of `spec.template` starts a simulated
  rolling update that advances one pod per --rollout-step seconds, with the
  status fields and conditions each kind really has.

Where it differs from a real API server:

- State is in memory only. There is no etcd, no admission webhooks, no
  managedFields, no Pods, ReplicaSets or ControllerRevisions: rollouts are
  simulated by a clock. Reads always return the latest state, so the
  resourceVersion and resourceVersionMatch parameters of get and list are
  ignored and continue tokens never expire. Watch history keeps the last
  20000 changes; older resourceVersions get a 410 Expired event.
- Rollout model: a Deployment replaces pods like maxSurge=1 and
  maxUnavailable=0 (which is what the default 25%/25% gives for up to 3
  replicas), a StatefulSet and a DaemonSet replace one pod at a time. A
  DaemonSet runs on --nodes nodes unless its seeded status says otherwise.
  Only a stalled rollout can exceed its progress deadline.
- Strategic merge patch uses a fixed table of list merge keys by field name
  (containers and env by name, volumeMounts by mountPath, ...) instead of
  the OpenAPI schema, and replaces other lists. For Secrets and Namespaces,
  which have no merge-keyed lists, it acts as a JSON merge patch.
- Server-side apply (application/apply-patch+yaml) and YAML bodies return
  415. There is no /openapi/v2 or /openapi/v3, so kubectl create -f and
  replace -f need --validate=false. Watches never return a Table.
- deletecollection, subresources (status, scale) and Namespace finalization
  are not implemented; deleting a Namespace removes it and its objects at once.
- Validation covers names, Secret keys, types and size, and workload
  selectors and containers, not the rest of the schema.
- Messages of failed JSON patch operations are close to, not the same as,
  those of the Go json-patch library the real server uses.
- The only user is --user (default system:serviceaccount:keywheel:rotator),
  and only /_emulator/forbid rules deny anything.

Test control API (not Kubernetes; JSON in and out; not in the request log):

    POST /_emulator/seed      list of objects to create, or {"items": [...]}
    POST /_emulator/reset     drop every object, rule and log entry
    POST /_emulator/forbid    {"namespace"?, "verbs", "resource", "name"?, "user"?}
    POST /_emulator/conflict  {"namespace", "name", "resource", "count",
                               "data_key"?}
    POST /_emulator/fail      {"method"?, "path_regex", "status", "count",
                               "retry_after"?, "reason"?, "message"?}
    POST /_emulator/stall     {"namespace", "kind", "name",
                               "progress_deadline_seconds"?}
    GET  /_emulator/requests  log of every API request; DELETE clears it
    GET on forbid, conflict, fail and stall lists the rules, DELETE clears them.

- seed is all or nothing. It creates missing namespaces, merges the labels
  and annotations of a seeded Namespace that exists, accepts workloads
  without selector, template or containers, and starts seeded workloads
  fully rolled out unless they carry a status. --seed FILE loads the same
  format at start.
- forbid returns 403 for matching requests. "*" in verbs or resource
  matches all, and a rule without namespace matches every namespace.
- conflict: each of the next COUNT writes (PUT, PATCH, DELETE) to the
  object is preceded by a foreign write that sets the annotation
  k8s-emulator.test/concurrent-writer (and data[data_key] when given) and
  bumps the resourceVersion. A write carrying the old resourceVersion then
  gets 409, while an unconditional one succeeds, as in a real race.
- fail returns, to the next COUNT requests whose method matches and whose path
  (not query) matches path_regex (re.search), a Status with that code and
  a Retry-After header when retry_after is given.
- stall: the workload's rollout stops with one new pod that never becomes
  ready, and a Deployment's Progressing condition turns to
  ProgressDeadlineExceeded after spec.progressDeadlineSeconds (or
  progress_deadline_seconds). DELETE lets rollouts continue.
- reset keeps the resourceVersion counter climbing, so a version read
  before the reset never matches an object after it.

The request log keeps request bodies, Secret values included, for tests to
inspect. Nothing writes a request body or an object to stderr.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import copy
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import secrets as random_tokens
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

DEFAULT_USER = "system:serviceaccount:keywheel:rotator"
SERVER_VERSION = {
    "major": "1",
    "minor": "34",
    "emulationMajor": "1",
    "emulationMinor": "34",
    "gitVersion": "v1.34.0-k8s-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
MAX_SECRET_BYTES = 1024 * 1024
WATCH_HISTORY_LIMIT = 20000
DEFAULT_WATCH_TIMEOUT_SECONDS = 1800
CONCURRENT_WRITER_ANNOTATION = "k8s-emulator.test/concurrent-writer"
DEPLOYMENT_REVISION_ANNOTATION = "deployment.kubernetes.io/revision"

JSON_MEDIA = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PROTOBUF_MEDIA = "application/vnd.kubernetes.protobuf"


# --------------------------------------------------------------------------
# Resource types


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """One served resource: its group, version, names and scope."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...]
    categories: tuple[str, ...] = ()
    is_workload: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_resource(self) -> str:
        """Resource name as error messages print it, e.g. deployments.apps."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """Kind as Invalid messages print it, e.g. Deployment.apps."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def verbs(self) -> list[str]:
        return ["create", "delete", "get", "list", "patch", "update", "watch"]


NAMESPACES = ResourceType("", "v1", "namespaces", "namespace", "Namespace",
                          False, ("ns",))
SECRETS = ResourceType("", "v1", "secrets", "secret", "Secret", True, ())
DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "deployment",
                           "Deployment", True, ("deploy",), ("all",), True)
STATEFULSETS = ResourceType("apps", "v1", "statefulsets", "statefulset",
                            "StatefulSet", True, ("sts",), ("all",), True)
DAEMONSETS = ResourceType("apps", "v1", "daemonsets", "daemonset",
                          "DaemonSet", True, ("ds",), ("all",), True)
RESOURCE_TYPES = (NAMESPACES, SECRETS, DEPLOYMENTS, STATEFULSETS, DAEMONSETS)
GROUP_VERSIONS = {("", "v1"), ("apps", "v1")}


def find_resource_type(group: str, version: str, plural: str):
    for rtype in RESOURCE_TYPES:
        if (rtype.group, rtype.version, rtype.plural) == (group, version, plural):
            return rtype
    return None


def resource_type_for_name(word: str):
    """Find a type by plural, singular, short name or Kind, any case."""
    lowered = word.lower()
    for rtype in RESOURCE_TYPES:
        names = {rtype.plural, rtype.singular, rtype.kind.lower(),
                 rtype.qualified_resource, *rtype.short_names}
        if lowered in names:
            return rtype
    return None


def resource_type_for_object(obj: dict):
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    for rtype in RESOURCE_TYPES:
        if rtype.kind == kind and api_version in (None, rtype.api_version):
            return rtype
    return None


# --------------------------------------------------------------------------
# Status bodies


class ApiError(Exception):
    """An error returned to the client as a meta/v1 Status body."""

    def __init__(self, status: dict, headers: list | None = None,
                 plain_text: str | None = None):
        super().__init__(status.get("message", ""))
        self.status = status
        self.headers = headers or []
        self.plain_text = plain_text  # sent instead of the Status when set

    @property
    def code(self) -> int:
        return self.status["code"]


def failure_status(code: int, reason: str, message: str,
                   details: dict | None = None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def resource_details(rtype: ResourceType, name: str = "") -> dict:
    """Status details as the real server fills them: kind is the plural."""
    details = {}
    if name:
        details["name"] = name
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.plural
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(failure_status(
        404, "NotFound", f'{rtype.qualified_resource} "{name}" not found',
        resource_details(rtype, name)))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(failure_status(
        409, "AlreadyExists",
        f'{rtype.qualified_resource} "{name}" already exists',
        resource_details(rtype, name)))


def conflict(rtype: ResourceType, name: str, cause: str) -> ApiError:
    return ApiError(failure_status(
        409, "Conflict",
        f'Operation cannot be fulfilled on {rtype.qualified_resource} '
        f'"{name}": {cause}',
        resource_details(rtype, name)))


OPTIMISTIC_LOCK_MESSAGE = (
    "the object has been modified; please apply your changes to the latest "
    "version and try again")


def precondition_conflict(rtype: ResourceType, namespace: str, name: str,
                          field: str, expected: str, actual: str) -> ApiError:
    """409 for a failed uid or resourceVersion precondition.

    The real server reports these through its storage layer, so the message
    carries the storage error text and the etcd key.
    """
    key = f"/registry/{rtype.plural}/{namespace}/{name}" if namespace else \
        f"/registry/{rtype.plural}/{name}"
    cause = (
        f"StorageError: invalid object, Code: 4, Key: {key}, "
        f"ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: "
        f"{field} in precondition: {expected}, {field} in object meta: {actual}")
    return conflict(rtype, name, cause)


def forbidden(rtype: ResourceType, verb: str, namespace: str, name: str,
              user: str) -> ApiError:
    subject = rtype.qualified_resource
    prefix = f'{subject} "{name}" is forbidden' if name else f"{subject} is forbidden"
    scope = (f'in the namespace "{namespace}"' if namespace
             else "at the cluster scope")
    message = (f'{prefix}: User "{user}" cannot {verb} resource '
               f'"{rtype.plural}" in API group "{rtype.group}" {scope}')
    return ApiError(failure_status(403, "Forbidden", message,
                                   resource_details(rtype, name)))


def bad_request(message: str) -> ApiError:
    return ApiError(failure_status(400, "BadRequest", message))


def unsupported_media_type(accepted: list[str], note: str = "") -> ApiError:
    message = ("the body of the request was in an unknown format - accepted "
               "media types include: " + ", ".join(accepted))
    if note:
        message += f" ({note})"
    return ApiError(failure_status(415, "UnsupportedMediaType", message, {}))


def method_not_allowed() -> ApiError:
    return ApiError(failure_status(
        405, "MethodNotAllowed",
        "the server does not allow this method on the requested resource", {}))


def resource_not_found() -> ApiError:
    return ApiError(failure_status(
        404, "NotFound", "the server could not find the requested resource", {}))


def internal_error(message: str) -> ApiError:
    return ApiError(failure_status(
        500, "InternalError", f"Internal error occurred: {message}",
        {"causes": [{"message": message}]}))


@dataclasses.dataclass
class FieldError:
    """One validation error, formatted like k8s.io/apimachinery field.Error."""

    field: str
    kind: str  # Invalid, Required, Forbidden or TooLong
    detail: str = ""
    value: Any = None

    CAUSE_REASONS = {
        "Invalid": "FieldValueInvalid",
        "Required": "FieldValueRequired",
        "Forbidden": "FieldValueForbidden",
        "TooLong": "FieldValueTooLong",
    }

    def body(self) -> str:
        if self.kind == "Invalid":
            text = f"Invalid value: {go_quote(self.value)}"
            return f"{text}: {self.detail}" if self.detail else text
        if self.kind == "Required":
            return f"Required value: {self.detail}" if self.detail else "Required value"
        if self.kind == "Forbidden":
            return f"Forbidden: {self.detail}"
        return f"Too long: {self.detail}"

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def go_quote(value: Any) -> str:
    """Format a value roughly as Go's %q (strings) or %v (others)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        pairs = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}"
                          for k, v in sorted(value.items()))
        return "map[string]string{" + pairs + "}"
    return str(value)


def invalid(qualified_kind: str, group: str, details_kind: str, name: str,
            errors: list[FieldError]) -> ApiError:
    """422 Invalid with one cause per field error."""
    if len(errors) == 1:
        summary = str(errors[0])
    else:
        summary = "[" + ", ".join(str(error) for error in errors) + "]"
    details: dict = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if details_kind:
        details["kind"] = details_kind
    details["causes"] = [
        {"reason": FieldError.CAUSE_REASONS[error.kind],
         "message": error.body(), "field": error.field}
        for error in errors
    ]
    message = f'{qualified_kind} "{name}" is invalid: {summary}'
    return ApiError(failure_status(422, "Invalid", message, details))


def invalid_object(rtype: ResourceType, name: str,
                   errors: list[FieldError]) -> ApiError:
    return invalid(rtype.qualified_kind, rtype.group, rtype.kind, name, errors)


def json_patch_failure(detail: str) -> ApiError:
    """422 for a JSON patch that cannot be applied, as the real server words it."""
    return ApiError(failure_status(
        422, "Invalid",
        "the server rejected our request due to an error in our request",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": detail}]}))


STATUS_REASONS = {
    400: ("BadRequest", "the server rejected the request"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed",
          "the server does not allow this method on the requested resource"),
    408: ("Timeout", "the server was unable to return a response in the time allotted"),
    409: ("Conflict", "the server reported a conflict"),
    410: ("Expired", "the resource has expired"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected failure"),
    502: ("InternalError", "the server received an invalid response from an upstream server"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


def injected_failure(rule: "FailRule") -> ApiError:
    reason, message = STATUS_REASONS.get(rule.status, ("Unknown", "injected failure"))
    details: dict = {}
    headers = []
    if rule.retry_after is not None:
        details["retryAfterSeconds"] = rule.retry_after
        headers.append(("Retry-After", str(rule.retry_after)))
    status = failure_status(rule.status, rule.reason or reason,
                            rule.message or message, details)
    return ApiError(status, headers)


# --------------------------------------------------------------------------
# Small helpers


TOP_LEVEL_ORDER = ("kind", "apiVersion", "metadata", "immutable", "data", "type",
                   "spec", "status")
METADATA_ORDER = ("name", "generateName", "namespace", "selfLink", "uid",
                  "resourceVersion", "generation", "creationTimestamp",
                  "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
                  "annotations", "ownerReferences", "finalizers")


def in_field_order(obj: dict) -> dict:
    """Order keys as the real server's Go structs serialize them."""
    def ordered(mapping: dict, order: tuple) -> dict:
        rank = {key: index for index, key in enumerate(order)}
        return dict(sorted(mapping.items(), key=lambda item: rank.get(item[0], len(rank))))

    result = ordered(obj, TOP_LEVEL_ORDER)
    if isinstance(result.get("metadata"), dict):
        result["metadata"] = ordered(result["metadata"], METADATA_ORDER)
    return result


def now_timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def without_none(mapping: dict) -> dict:
    return {key: value for key, value in mapping.items() if value is not None}


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
DNS_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
    "characters or '-', and must start and end with an alphanumeric character "
    "(e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
    "characters, '-' or '.', and must start and end with an alphanumeric "
    "character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
CONFIG_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or "
    "'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
    "validation is '[-._a-zA-Z0-9]+')")


def validate_name(name: str, as_label: bool) -> list[FieldError]:
    if not name:
        return [FieldError("metadata.name", "Required",
                           "name or generateName is required")]
    pattern, limit, message = (
        (DNS_LABEL, 63, DNS_LABEL_MESSAGE) if as_label
        else (DNS_SUBDOMAIN, 253, DNS_SUBDOMAIN_MESSAGE))
    errors = []
    if len(name) > limit:
        errors.append(FieldError("metadata.name", "Invalid",
                                 f"must be no more than {limit} characters", name))
    if not pattern.match(name):
        errors.append(FieldError("metadata.name", "Invalid", message, name))
    return errors


# --------------------------------------------------------------------------
# Base64 as Go's encoding/base64.StdEncoding decodes it


_B64_VALUES = {c: i for i, c in enumerate(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def go_base64_error(text: str) -> str | None:
    """Return the error Go's StdEncoding.Decode gives for text, or None.

    The real server decodes Secret data with Go's decoder, whose error names
    the offset of the first bad byte ("illegal base64 data at input byte 4").
    Python's binascii accepts and rejects different inputs, so this ports the
    Go algorithm: padding required, CR and LF skipped, trailing bits ignored.
    """
    src = text.encode("utf-8")
    length = len(src)
    si = 0
    while si < length:
        count = 0
        while count < 4:
            if si == length:
                if count == 0:
                    return None
                return f"illegal base64 data at input byte {si - count}"
            byte = src[si]
            si += 1
            if byte in _B64_VALUES:
                count += 1
                continue
            if byte in (0x0A, 0x0D):
                continue
            if byte != 0x3D:
                return f"illegal base64 data at input byte {si - 1}"
            if count in (0, 1):
                return f"illegal base64 data at input byte {si - 1}"
            if count == 2:
                while si < length and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == length:
                    return f"illegal base64 data at input byte {length}"
                if src[si] != 0x3D:
                    return f"illegal base64 data at input byte {si - 1}"
                si += 1
            while si < length and src[si] in (0x0A, 0x0D):
                si += 1
            if si < length:
                return f"illegal base64 data at input byte {si}"
            return None
    return None


def decode_base64(text: str) -> bytes:
    """Decode text already checked by go_base64_error."""
    cleaned = text.replace("\n", "").replace("\r", "")
    return base64.b64decode(cleaned)


# --------------------------------------------------------------------------
# Label and field selectors


class SelectorError(ValueError):
    pass


LABEL_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?"
                       r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SET_REQUIREMENT = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
EQUALITY_REQUIREMENT = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(.*)$")


def split_outside_parentheses(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def check_label_key(key: str) -> str:
    if not LABEL_KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key "
                            f"{json.dumps(key)}")
    return key


def check_label_value(value: str) -> str:
    if len(value) > 63 or not LABEL_VALUE.match(value):
        raise SelectorError(f"unable to parse requirement: invalid label value: "
                            f"{json.dumps(value)}")
    return value


def parse_label_selector(text: str) -> list[tuple]:
    """Parse a label selector into (key, operator, values) requirements."""
    requirements: list[tuple] = []
    if not text.strip():
        return requirements
    for part in split_outside_parentheses(text):
        part = part.strip()
        if not part:
            raise SelectorError("unable to parse requirement: found '', "
                                "expected: identifier")
        if part.startswith("!"):
            requirements.append((check_label_key(part[1:].strip()), "!", ()))
            continue
        match = SET_REQUIREMENT.match(part)
        if match:
            values = tuple(check_label_value(value.strip())
                           for value in match.group(3).split(","))
            requirements.append((check_label_key(match.group(1)),
                                 match.group(2), values))
            continue
        match = EQUALITY_REQUIREMENT.match(part)
        if match:
            operator = "=" if match.group(2) == "==" else match.group(2)
            value = check_label_value(match.group(3).strip())
            requirements.append((check_label_key(match.group(1)), operator,
                                 (value,)))
            continue
        requirements.append((check_label_key(part), "exists", ()))
    return requirements


def labels_match(requirements: list[tuple], labels: dict) -> bool:
    for key, operator, values in requirements:
        present = key in labels
        value = labels.get(key)
        if operator == "exists" and not present:
            return False
        if operator == "!" and present:
            return False
        if operator in ("=", "in") and (not present or value not in values):
            return False
        # != and notin also match objects that lack the key.
        if operator in ("!=", "notin") and present and value in values:
            return False
    return True


def parse_field_selector(text: str, rtype: ResourceType) -> list[tuple]:
    allowed = ["metadata.name", "metadata.namespace"]
    if rtype is SECRETS:
        allowed.append("type")
    if rtype is NAMESPACES:
        allowed.append("status.phase")
    requirements = []
    if not text.strip():
        return requirements
    for part in text.split(","):
        match = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not match:
            raise SelectorError(f"invalid selector: '{text}'; can't understand "
                                f"'{part}'")
        field, operator, value = match.groups()
        if field not in allowed:
            raise SelectorError(f'field label not supported: {field}')
        requirements.append((field, "!=" if operator == "!=" else "=", value))
    return requirements


def field_value(obj: dict, field: str) -> str:
    current: Any = obj
    for part in field.split("."):
        current = current.get(part, "") if isinstance(current, dict) else ""
    return current if isinstance(current, str) else ""


def fields_match(requirements: list[tuple], obj: dict) -> bool:
    for field, operator, value in requirements:
        equal = field_value(obj, field) == value
        if equal != (operator == "="):
            return False
    return True


# --------------------------------------------------------------------------
# Patches


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch and return the result."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class JsonPatchError(Exception):
    pass


def parse_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise JsonPatchError(f'JSON pointer must be empty or start with a "/": '
                             f'{pointer}')
    return [token.replace("~1", "/").replace("~0", "~")
            for token in pointer[1:].split("/")]


def resolve_parent(document: Any, tokens: list[str], pointer: str, operation: str):
    current = document
    for token in tokens[:-1]:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            raise JsonPatchError(f"{operation} operation does not apply: doc is "
                                 f"missing path: {json.dumps(pointer)}: missing value")
    return current


def pointer_get(document: Any, pointer: str, operation: str) -> Any:
    current = document
    for token in parse_pointer(pointer):
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            raise JsonPatchError(f"{operation} operation does not apply: doc is "
                                 f"missing key: {pointer}: missing value")
    return current


def pointer_add(document: Any, pointer: str, value: Any, operation: str) -> Any:
    tokens = parse_pointer(pointer)
    if not tokens:
        return value
    parent = resolve_parent(document, tokens, pointer, operation)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise JsonPatchError(f"{operation} operation does not apply: index "
                                 f"out of bounds: {pointer}")
    else:
        raise JsonPatchError(f"{operation} operation does not apply: doc is "
                             f"missing path: {json.dumps(pointer)}: missing value")
    return document


def pointer_remove(document: Any, pointer: str, operation: str) -> Any:
    tokens = parse_pointer(pointer)
    if not tokens:
        raise JsonPatchError(f"{operation} operation does not apply: cannot "
                             f"remove the whole document")
    parent = resolve_parent(document, tokens, pointer, operation)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise JsonPatchError(f"error in remove for path: '{pointer}': Unable to "
                             f"remove nonexistent key: {last}: missing value")
    return document


def apply_json_patch(document: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test).

    Raises JsonPatchError when an operation cannot be applied and ValueError
    when the patch itself is malformed.
    """
    if not isinstance(operations, list):
        raise ValueError("json: cannot unmarshal object into Go value of type "
                         "jsonpatch.Patch")
    document = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise ValueError("invalid JSON patch operation: missing op")
        op = operation["op"]
        path = operation.get("path")
        if not isinstance(path, str):
            raise ValueError(f"invalid JSON patch operation {op}: missing path")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise ValueError(f"invalid JSON patch operation {op}: missing value")
        value = copy.deepcopy(operation.get("value"))
        if op == "add":
            document = pointer_add(document, path, value, "add")
        elif op == "remove":
            document = pointer_remove(document, path, "remove")
        elif op == "replace":
            pointer_get(document, path, "replace")
            if parse_pointer(path):
                document = pointer_remove(document, path, "replace")
            document = pointer_add(document, path, value, "replace")
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise ValueError(f"invalid JSON patch operation {op}: missing from")
            moved = copy.deepcopy(pointer_get(document, source, op))
            if op == "move":
                document = pointer_remove(document, source, op)
            document = pointer_add(document, path, moved, op)
        elif op == "test":
            try:
                current = pointer_get(document, path, "test")
            except JsonPatchError:
                current = None
            if current != value:
                raise JsonPatchError(f"testing value {path} failed: test failed")
        else:
            raise ValueError(f"Unexpected kind: {op}")
    return document


# Merge keys of lists that strategic merge patch merges element by element,
# by field name. The real server reads them from the Go types' patchMergeKey
# tags; these are the ones of Pod templates and object metadata.
STRATEGIC_LIST_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
STRATEGIC_PRIMITIVE_SETS = {"finalizers"}
_DELETE = object()


def strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: strip_directives(item) for key, item in value.items()
                if not key.startswith("$")}
    if isinstance(value, list):
        return [strip_directives(item) for item in value]
    return value


def strategic_merge(original: Any, patch: Any) -> Any:
    """Apply a strategic merge patch, with the limits in the module docstring."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return strip_directives(patch)
    if directive == "delete":
        return _DELETE
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            kept = [item for item in result.get(field) or [] if item not in value]
            result[field] = kept
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = strategic_merge_list(key, result.get(key), value)
        else:
            merged = strategic_merge(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
    retained = patch.get("$retainKeys")
    if isinstance(retained, list):
        result = {key: value for key, value in result.items() if key in retained}
    return result


def strategic_merge_list(field: str, original: Any, patch: list) -> list:
    if any(isinstance(item, dict) and item.get("$patch") == "replace"
           for item in patch):
        return [strip_directives(item) for item in patch
                if not (isinstance(item, dict) and item.get("$patch") == "replace")]
    current = copy.deepcopy(original) if isinstance(original, list) else []
    if field in STRATEGIC_PRIMITIVE_SETS:
        return current + [item for item in patch if item not in current]
    merge_key = STRATEGIC_LIST_KEYS.get(field)
    if merge_key is None or not all(isinstance(item, dict) for item in patch):
        return strip_directives(patch)
    for item in patch:
        key_value = item.get(merge_key)
        index = next((i for i, element in enumerate(current)
                      if isinstance(element, dict)
                      and element.get(merge_key) == key_value), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del current[index]
        elif index is None:
            current.append(strip_directives(item))
        else:
            current[index] = strategic_merge(current[index], item)
    return current


# --------------------------------------------------------------------------
# Request and rule types


@dataclasses.dataclass
class ApiRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: bytes
    content_type: str
    decoded_body: Any = None  # JSON form of a protobuf body, for the request log

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, default)

    def json_body(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise bad_request(f"couldn't get version/kind; json parse error: "
                              f"{error}") from None


@dataclasses.dataclass
class Route:
    rtype: ResourceType
    namespace: str  # "" for cluster-scoped types and all-namespace lists
    name: str       # "" for collections


@dataclasses.dataclass
class Response:
    code: int
    body: Any
    headers: list = dataclasses.field(default_factory=list)
    content_type: str = JSON_MEDIA
    watch: Callable | None = None  # streams the body when set


@dataclasses.dataclass
class ForbidRule:
    verbs: list[str]
    resource: str
    namespace: str | None
    name: str | None
    user: str

    def matches(self, rtype: ResourceType, verb: str, namespace: str,
                name: str) -> bool:
        return ((verb in self.verbs or "*" in self.verbs)
                and self.resource in ("*", rtype.plural, rtype.qualified_resource)
                and self.namespace in (None, namespace)
                and self.name in (None, name))


@dataclasses.dataclass
class FailRule:
    method: str
    path_regex: re.Pattern
    status: int
    count: int
    retry_after: int | None
    reason: str | None
    message: str | None

    def describe(self) -> dict:
        return {"method": self.method, "path_regex": self.path_regex.pattern,
                "status": self.status, "count": self.count,
                "retry_after": self.retry_after}


@dataclasses.dataclass
class ConflictRule:
    count: int
    data_key: str | None


@dataclasses.dataclass
class StallRule:
    progress_deadline_seconds: float | None


@dataclasses.dataclass
class Rollout:
    """A simulated rolling update of one workload, timed by the monotonic clock."""

    started: float
    generation: int
    replicas: int
    old_pods: int
    template_changed: bool
    new_hash: str
    old_hash: str
    revision: int
    ready_cap: int | None = None  # readiness stops here while stalled


@dataclasses.dataclass
class Progress:
    observed: bool
    updated: int
    new_ready: int
    done: bool
    last_progress: float  # monotonic time of the last change


@dataclasses.dataclass
class WatchRecord:
    rv: int
    type_name: str
    namespace: str
    name: str
    event_type: str  # ADDED, MODIFIED or DELETED
    before: dict | None
    after: dict


# --------------------------------------------------------------------------
# Protobuf request bodies (Secret and Namespace only)
#
# kubectl's typed clients (create secret, create namespace) send protobuf.
# The envelope is the 4-byte magic "k8s\0" and a runtime.Unknown message
# (typeMeta = 1, raw = 2). Field numbers below come from the generated.proto
# files of k8s.io/api/core/v1 and k8s.io/apimachinery/pkg/apis/meta/v1.

PROTOBUF_MAGIC = b"k8s\x00"


def read_varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise DecodeError("proto: truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def protobuf_fields(data: bytes) -> list[tuple[int, Any]]:
    """Split a message into (field number, value) pairs.

    Varints come back as int, length-delimited fields as bytes; fixed-width
    fields are skipped because none of the decoded messages uses them.
    """
    fields, position = [], 0
    while position < len(data):
        tag, position = read_varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, position = read_varint(data, position)
        elif wire_type == 2:
            length, position = read_varint(data, position)
            value = data[position:position + length]
            if len(value) != length:
                raise DecodeError("proto: truncated length-delimited field")
            position += length
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
            continue
        else:
            raise DecodeError(f"proto: unsupported wire type {wire_type}")
        fields.append((number, value))
    return fields


def protobuf_text(value: Any) -> str:
    if not isinstance(value, bytes):
        raise DecodeError("proto: wrong wire type for a string field")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("proto: string field is not valid UTF-8") from None


def protobuf_map_entry(entry: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, field in protobuf_fields(entry):
        if number == 1:
            key = protobuf_text(field)
        elif number == 2:
            value = field
    return key, value


def decode_protobuf_metadata(data: bytes) -> dict:
    names = {1: "name", 2: "generateName", 3: "namespace", 5: "uid",
             6: "resourceVersion"}
    metadata: dict = {}
    for number, value in protobuf_fields(data):
        if number in names:
            text = protobuf_text(value)
            if text:  # proto2 sends empty optional strings; JSON omits them
                metadata[names[number]] = text
        elif number in (11, 12):
            key, text = protobuf_map_entry(value)
            field = "labels" if number == 11 else "annotations"
            metadata.setdefault(field, {})[key] = protobuf_text(text)
        elif number == 14:
            metadata.setdefault("finalizers", []).append(protobuf_text(value))
    return metadata


def decode_protobuf_secret(data: bytes) -> dict:
    secret: dict = {}
    for number, value in protobuf_fields(data):
        if number == 1:
            secret["metadata"] = decode_protobuf_metadata(value)
        elif number == 2:
            key, raw = protobuf_map_entry(value)
            secret.setdefault("data", {})[key] = base64.b64encode(raw).decode("ascii")
        elif number == 3 and value:
            secret["type"] = protobuf_text(value)
        elif number == 4:
            key, text = protobuf_map_entry(value)
            secret.setdefault("stringData", {})[key] = protobuf_text(text)
        elif number == 5:
            secret["immutable"] = bool(value)
    return secret


def decode_protobuf_namespace(data: bytes) -> dict:
    namespace: dict = {}
    for number, value in protobuf_fields(data):
        if number == 1:
            namespace["metadata"] = decode_protobuf_metadata(value)
        elif number == 2:
            finalizers = [protobuf_text(item) for field, item
                          in protobuf_fields(value) if field == 1]
            namespace["spec"] = {"finalizers": finalizers} if finalizers else {}
    return namespace


PROTOBUF_DECODERS = {"Secret": decode_protobuf_secret,
                     "Namespace": decode_protobuf_namespace}


def decode_protobuf_body(payload: bytes) -> dict:
    """Decode a protobuf Secret or Namespace into its JSON form."""
    if not payload.startswith(PROTOBUF_MAGIC):
        raise DecodeError("provided data does not appear to be a protobuf "
                          "message, expected prefix [107 56 115 0]")
    api_version, kind, raw = "", "", b""
    for number, value in protobuf_fields(payload[len(PROTOBUF_MAGIC):]):
        if number == 1:
            for type_field, text in protobuf_fields(value):
                if type_field == 1:
                    api_version = protobuf_text(text)
                elif type_field == 2:
                    kind = protobuf_text(text)
        elif number == 2:
            raw = value
    decoder = PROTOBUF_DECODERS.get(kind)
    if decoder is None:
        raise UnsupportedProtobuf(kind)
    return {"apiVersion": api_version, "kind": kind, **decoder(raw)}


class UnsupportedProtobuf(Exception):
    """A protobuf body of a kind this emulator does not decode."""


# --------------------------------------------------------------------------
# Object preparation: defaults, decoding and validation per type


KNOWN_TOP_LEVEL_FIELDS = {
    "Secret": {"apiVersion", "kind", "metadata", "data", "stringData", "type",
               "immutable"},
    "Namespace": {"apiVersion", "kind", "metadata", "spec", "status"},
    "Deployment": {"apiVersion", "kind", "metadata", "spec", "status"},
    "StatefulSet": {"apiVersion", "kind", "metadata", "spec", "status"},
    "DaemonSet": {"apiVersion", "kind", "metadata", "spec", "status"},
}
KNOWN_METADATA_FIELDS = {
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
    "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
    "finalizers", "managedFields",
}


class DecodeError(Exception):
    """The body is not a valid serialized object of the requested type."""


def decode_object(rtype: ResourceType, obj: Any, field_validation: str) -> list[str]:
    """Check the serialized form of obj in place, as the server's decoder does.

    Drops unknown top-level and metadata fields and returns one warning per
    field (fieldValidation Warn), or raises DecodeError (Strict). For Secrets
    it checks that every data value is base64 and merges stringData into data.
    """
    if not isinstance(obj, dict):
        raise DecodeError("json: cannot unmarshal non-object into Go value of "
                          f"type v1.{rtype.kind}")
    unknown = [key for key in obj if key not in KNOWN_TOP_LEVEL_FIELDS[rtype.kind]]
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = obj["metadata"] = {}
    if not isinstance(metadata, dict):
        raise DecodeError("json: cannot unmarshal non-object into Go struct "
                          f"field {rtype.kind}.metadata of type v1.ObjectMeta")
    unknown += [f"metadata.{key}" for key in metadata
                if key not in KNOWN_METADATA_FIELDS]
    if unknown and field_validation == "Strict":
        quoted = ", ".join(f'unknown field "{field}"' for field in unknown)
        raise DecodeError(f"strict decoding error: {quoted}")
    for field in unknown:
        if field.startswith("metadata."):
            metadata.pop(field[len("metadata."):], None)
        else:
            obj.pop(field, None)
    for field in ("labels", "annotations"):
        values = metadata.get(field)
        if values is not None and (not isinstance(values, dict) or not all(
                isinstance(value, str) for value in values.values())):
            raise DecodeError(f"json: cannot unmarshal into Go struct field "
                              f"ObjectMeta.metadata.{field} of type string")
    if rtype is SECRETS:
        decode_secret_data(obj)
    warnings = [f'unknown field "{field}"' for field in unknown]
    return warnings if field_validation != "Ignore" else []


def decode_secret_data(secret: dict) -> None:
    data = secret.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DecodeError("json: cannot unmarshal non-object into Go struct "
                          "field Secret.data of type map[string][]uint8")
    for key, value in list(data.items()):
        if value is None:
            data[key] = ""
            continue
        if not isinstance(value, str):
            raise DecodeError("json: cannot unmarshal non-string into Go struct "
                              "field Secret.data of type []uint8")
        error = go_base64_error(value)
        if error:
            raise DecodeError(error)
    string_data = secret.pop("stringData", None)
    if string_data is not None:
        if not isinstance(string_data, dict) or not all(
                isinstance(value, str) for value in string_data.values()):
            raise DecodeError("json: cannot unmarshal into Go struct field "
                              "Secret.stringData of type string")
        # stringData wins over data for the same key, as in the real server's
        # v1 to internal conversion.
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode("utf-8")).decode("ascii")
    if data or "data" in secret:
        secret["data"] = {key: data[key] for key in data}
    if not secret.get("type"):
        secret["type"] = "Opaque"


SECRET_REQUIRED_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
}


def validate_secret(secret: dict, old: dict | None) -> list[FieldError]:
    errors = []
    data = secret.get("data") or {}
    total = 0
    for key, value in data.items():
        if not CONFIG_KEY.match(key) or key in (".", "..") or key.startswith(".."):
            errors.append(FieldError(f"data[{key}]", "Invalid", CONFIG_KEY_MESSAGE, key))
        total += len(key) + len(decode_base64(value))

    if total > MAX_SECRET_BYTES:
        errors.append(FieldError("data", "TooLong",
                                 f"must have at most {MAX_SECRET_BYTES} bytes"))

    secret_type = secret.get("type")
    for key in SECRET_REQUIRED_KEYS.get(secret_type, ()):
        if key not in data:
            errors.append(FieldError(f"data[{key}]", "Required"))
    if secret_type == "kubernetes.io/basic-auth" and not (
            "username" in data or "password" in data):
        errors.append(FieldError("data[username]", "Required"))
        errors.append(FieldError("data[password]", "Required"))
    annotations = secret["metadata"].get("annotations") or {}
    if (secret_type == "kubernetes.io/service-account-token"
            and not annotations.get("kubernetes.io/service-account.name")):
        errors.append(FieldError(
            "metadata.annotations[kubernetes.io/service-account.name]", "Required"))

    if old is None:
        return errors
    if secret_type != old.get("type"):
        errors.append(FieldError("type", "Invalid", "field is immutable",
                                 secret_type))
    if old.get("immutable"):
        message = "field is immutable when `immutable` is set"
        if not secret.get("immutable"):
            errors.append(FieldError("immutable", "Forbidden", message))
        if (secret.get("data") or {}) != (old.get("data") or {}):
            errors.append(FieldError("data", "Forbidden", message))
    return errors


def prepare_namespace(namespace: dict, old: dict | None) -> None:
    name = namespace["metadata"]["name"]
    labels = namespace["metadata"].setdefault("labels", {})
    # The real server always sets this label to the namespace's name.
    labels["kubernetes.io/metadata.name"] = name
    if old is None:
        spec = namespace.get("spec") or {}
        spec.setdefault("finalizers", ["kubernetes"])
        namespace["spec"] = spec
        namespace["status"] = {"phase": "Active"}
    else:
        namespace["spec"] = old.get("spec", {})
        namespace["status"] = old.get("status", {})


def default_pod_template(template: dict) -> None:
    template.setdefault("metadata", {})
    spec = template.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
        latest = tagless or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})


def default_workload(rtype: ResourceType, obj: dict) -> None:
    """Fill the defaults the apps/v1 defaulting functions set."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise DecodeError(f"json: cannot unmarshal non-object into Go struct "
                          f"field {rtype.kind}.spec")
    if rtype is not DAEMONSETS:
        spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    if rtype is DEPLOYMENTS:
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        spec.setdefault("progressDeadlineSeconds", 600)
    elif rtype is STATEFULSETS:
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("persistentVolumeClaimRetentionPolicy",
                        {"whenDeleted": "Retain", "whenScaled": "Retain"})
    else:
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", 1)
            rolling.setdefault("maxSurge", 0)
    for field, expected in (("template", dict), ("selector", dict),
                            ("replicas", int)):
        value = spec.get(field)
        if value is not None and (not isinstance(value, expected)
                                  or isinstance(value, bool)):
            raise DecodeError(f"json: cannot unmarshal into Go struct field "
                              f"{rtype.kind}Spec.spec.{field} of type "
                              f"{expected.__name__}")
    template = spec.get("template")
    if isinstance(template, dict):
        for field in ("metadata", "spec"):
            if not isinstance(template.get(field, {}), dict):
                raise DecodeError(f"json: cannot unmarshal into Go struct field "
                                  f"PodTemplateSpec.spec.template.{field}")
        default_pod_template(template)


def validate_workload(rtype: ResourceType, obj: dict,
                      old: dict | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors = []
    replicas = spec.get("replicas", 0)
    if not isinstance(replicas, int) or replicas < 0:
        errors.append(FieldError("spec.replicas", "Invalid",
                                 "must be greater than or equal to 0", replicas))
    selector = spec.get("selector")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict) or not (
            selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(FieldError("spec.selector", "Required"))
    else:
        match_labels = selector.get("matchLabels") or {}
        if any(labels.get(key) != value for key, value in match_labels.items()):
            errors.append(FieldError("spec.template.metadata.labels", "Invalid",
                                     "`selector` does not match template `labels`",
                                     labels))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
    if not containers:
        errors.append(FieldError("spec.template.spec.containers", "Required"))
    if old is not None and spec.get("selector") != (old.get("spec") or {}).get("selector"):
        errors.append(FieldError("spec.selector", "Invalid", "field is immutable",
                                 json.dumps(spec.get("selector"), sort_keys=True)))
    return errors


def validate_object(rtype: ResourceType, obj: dict,
                    old: dict | None) -> list[FieldError]:
    name = obj["metadata"].get("name", "")
    errors = validate_name(name, as_label=rtype in (NAMESPACES, STATEFULSETS))
    if rtype is SECRETS:
        errors += validate_secret(obj, old)
    elif rtype.is_workload:
        errors += validate_workload(rtype, obj, old)
    return errors


SAFE_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Any) -> str:
    """A pod-template-hash in the real alphabet (not the real FNV hash)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(SAFE_HASH_ALPHABET[byte % len(SAFE_HASH_ALPHABET)]
                   for byte in digest[:10])


def scaled_count(value: Any, total: int, round_up: bool) -> int:
    """Resolve an IntOrString such as "25%" against total."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = int(value[:-1])
        except ValueError:
            return 0
        scaled = total * percent / 100
        return int(-(-scaled // 1)) if round_up else int(scaled // 1)
    return 0


# --------------------------------------------------------------------------
# The emulator


class Emulator:
    """All API state behind one lock, and the request handlers.

    self.lock is a Condition: watch streams wait on it for new events.
    """

    def __init__(self, rollout_step: float, node_count: int, user: str):
        self.rollout_step = rollout_step
        self.node_count = node_count
        self.default_user = user
        self.lock = threading.Condition(threading.RLock())
        self.closed = False
        self.resource_version = 0
        self.request_log: list[dict] = []
        self.request_sequence = 0
        self.reset()

    # ---- state ----------------------------------------------------------

    def reset(self) -> None:
        """Drop all objects, rules and logs. The resourceVersion keeps climbing,
        so a version seen before the reset never matches an object after it."""
        with self.lock:
            self.objects: dict[tuple[str, str, str], dict] = {}
            self.rollouts: dict[tuple[str, str, str], Rollout] = {}
            self.stalls: dict[tuple[str, str, str], StallRule] = {}
            self.forbid_rules: list[ForbidRule] = []
            self.conflict_rules: dict[tuple[str, str, str], ConflictRule] = {}
            self.fail_rules: list[FailRule] = []
            self.request_log = []
            self.events: list[WatchRecord] = []
            self.event_versions: list[int] = []
            # Watches from a resourceVersion below this one get 410 Expired.
            self.oldest_watchable = self.resource_version
            for name in DEFAULT_NAMESPACES:
                self.store_new(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": name}})
            self.lock.notify_all()

    def next_version(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def record_event(self, rtype: ResourceType, event_type: str,
                     before: dict | None, after: dict) -> None:
        metadata = after["metadata"]
        record = WatchRecord(int(metadata["resourceVersion"]),
                             rtype.qualified_resource, metadata.get("namespace", ""),
                             metadata["name"], event_type,
                             copy.deepcopy(before), copy.deepcopy(after))
        self.events.append(record)
        self.event_versions.append(record.rv)
        if len(self.events) > WATCH_HISTORY_LIMIT:
            dropped = len(self.events) // 2
            self.oldest_watchable = self.events[dropped].rv - 1
            del self.events[:dropped]
            del self.event_versions[:dropped]
        self.lock.notify_all()

    @staticmethod
    def key(rtype: ResourceType, namespace: str, name: str) -> tuple[str, str, str]:
        return (rtype.qualified_resource, namespace if rtype.namespaced else "", name)

    def store_new(self, rtype: ResourceType, obj: dict) -> dict:
        """Fill system fields of a new object, store it and send ADDED."""
        metadata = obj["metadata"]
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now_timestamp()
        metadata["resourceVersion"] = str(self.next_version())
        if rtype is NAMESPACES:
            prepare_namespace(obj, None)
        stored = in_field_order(copy.deepcopy(obj))
        self.objects[self.key(rtype, metadata.get("namespace", ""),
                              metadata["name"])] = stored
        self.record_event(rtype, "ADDED", None, stored)
        return stored

    def store_update(self, rtype: ResourceType, old: dict, new: dict) -> dict:
        new["metadata"]["resourceVersion"] = str(self.next_version())
        stored = in_field_order(copy.deepcopy(new))
        metadata = stored["metadata"]
        self.objects[self.key(rtype, metadata.get("namespace", ""),
                              metadata["name"])] = stored
        self.record_event(rtype, "MODIFIED", old, stored)
        return stored

    def namespace_exists(self, namespace: str) -> bool:
        return self.key(NAMESPACES, "", namespace) in self.objects

    # ---- request entry point ---------------------------------------------

    def handle(self, request: ApiRequest) -> Response:
        """Handle one API request and return the response for the caller to send."""
        with self.lock:
            self.advance_rollouts()
            rule = self.take_fail_rule(request)
            if rule is not None:
                raise injected_failure(rule)
        discovery = self.discovery(request)
        if discovery is not None:
            return discovery
        route = parse_route(request.path)
        verb = request_verb(request, route)
        with self.lock:
            self.check_forbidden(route, verb)
        handler = {
            "get": self.get_object, "list": self.list_objects,
            "watch": self.watch_objects, "create": self.create_object,
            "update": self.replace_object, "patch": self.patch_object,
            "delete": self.delete_object,
        }.get(verb)
        if handler is None:
            raise method_not_allowed()
        return handler(request, route)

    def take_fail_rule(self, request: ApiRequest) -> FailRule | None:
        for rule in self.fail_rules:
            if rule.method not in ("*", request.method):
                continue
            if not rule.path_regex.search(request.path):
                continue
            rule.count -= 1
            if rule.count <= 0:
                self.fail_rules.remove(rule)
            return rule
        return None

    def check_forbidden(self, route: Route, verb: str) -> None:
        # For namespaces the real authorizer takes the namespace's own name as
        # the request namespace.
        namespace = route.name if route.rtype is NAMESPACES else route.namespace
        name = "" if verb in ("create", "list", "watch") else route.name
        for rule in self.forbid_rules:
            if rule.matches(route.rtype, verb, namespace, name):
                raise forbidden(route.rtype, verb, namespace, name, rule.user)

    # ---- discovery --------------------------------------------------------

    def discovery(self, request: ApiRequest) -> Response | None:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, "ok", content_type="text/plain; charset=utf-8")
        if path == "/version":
            return Response(200, SERVER_VERSION)
        if path in ("/api", "/apis") and wants_aggregated_discovery(request):
            return aggregated_discovery(path)
        if path == "/api":
            return Response(200, {
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
            })
        if path == "/apis":
            return Response(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": [api_group_document("apps")]})
        if path == "/apis/apps":
            document = api_group_document("apps")
            return Response(200, {"kind": "APIGroup", "apiVersion": "v1", **document})
        if path == "/api/v1":
            return Response(200, resource_list_document("", "v1"))
        if path == "/apis/apps/v1":
            return Response(200, resource_list_document("apps", "v1"))
        return None

    # ---- reads -------------------------------------------------------------

    def get_object(self, request: ApiRequest, route: Route) -> Response:
        with self.lock:
            obj = self.objects.get(self.key(route.rtype, route.namespace, route.name))
            if obj is None:
                raise not_found(route.rtype, route.name)
            return Response(200, present_object(request, route.rtype,
                                                copy.deepcopy(obj)))

    def matching_objects(self, route: Route, labels: list, fields: list) -> list[dict]:
        type_name = route.rtype.qualified_resource
        found = []
        for (stored_type, namespace, _), obj in sorted(self.objects.items()):
            if stored_type != type_name:
                continue
            if route.namespace and namespace != route.namespace:
                continue
            if not labels_match(labels, obj["metadata"].get("labels") or {}):
                continue
            if not fields_match(fields, obj):
                continue
            found.append(obj)
        return found

    def list_objects(self, request: ApiRequest, route: Route) -> Response:
        labels, fields = parse_selectors(request, route.rtype)
        limit = parse_int_param(request, "limit", 0)
        start_after = decode_continue(request.param("continue"))
        with self.lock:
            items = self.matching_objects(route, labels, fields)
            list_version = str(self.resource_version)
            if start_after is not None:
                items = [obj for obj in items if object_sort_key(obj) > start_after]
            metadata: dict = {"resourceVersion": list_version}
            if limit > 0 and len(items) > limit:
                remaining = len(items) - limit
                items = items[:limit]
                metadata["continue"] = encode_continue(object_sort_key(items[-1]))
                metadata["remainingItemCount"] = remaining
            items = [copy.deepcopy(obj) for obj in items]
        for item in items:
            # The real server leaves kind and apiVersion out of typed list items.
            item.pop("kind", None)
            item.pop("apiVersion", None)
        body = {"kind": f"{route.rtype.kind}List",
                "apiVersion": route.rtype.api_version,
                "metadata": metadata, "items": items}
        return Response(200, present_list(request, route.rtype, body))

    def watch_objects(self, request: ApiRequest, route: Route) -> Response:
        labels, fields = parse_selectors(request, route.rtype)
        if route.name:
            fields = fields + [("metadata.name", "=", route.name)]
        timeout = parse_int_param(request, "timeoutSeconds", DEFAULT_WATCH_TIMEOUT_SECONDS)
        version_param = request.param("resourceVersion")
        send_initial = request.param("sendInitialEvents") == "true"
        if version_param not in ("", "0") and not version_param.isdigit():
            raise bad_request(f"invalid resource version: {version_param}")
        with self.lock:
            initial: list[dict] = []
            if send_initial or version_param in ("", "0"):
                initial = [{"type": "ADDED", "object": copy.deepcopy(obj)}
                           for obj in self.matching_objects(route, labels, fields)]
                position = self.resource_version
            elif int(version_param) < self.oldest_watchable:
                initial = [{"type": "ERROR", "object": failure_status(
                    410, "Expired",
                    f"too old resource version: {version_param} "
                    f"({self.oldest_watchable + 1})")}]
                timeout = 0
                position = self.resource_version
            else:
                position = int(version_param)
            if send_initial:
                initial.append({"type": "BOOKMARK", "object": {
                    "kind": route.rtype.kind, "apiVersion": route.rtype.api_version,
                    "metadata": {"resourceVersion": str(position),
                                 "annotations": {"k8s.io/initial-events-end": "true"}},
                }})

        def stream(write_event: Callable[[dict], bool],
                   client_gone: Callable[[], bool]) -> None:
            self.stream_watch(route, labels, fields, position, initial,
                              time.monotonic() + timeout, write_event, client_gone)

        return Response(200, None, watch=stream)

    def stream_watch(self, route: Route, labels: list, fields: list, position: int,
                     initial: list[dict], deadline: float,
                     write_event: Callable[[dict], bool],
                     client_gone: Callable[[], bool]) -> None:
        """Send events after position until the deadline, shutdown or hang-up."""
        for event in initial:
            if not write_event(event):
                return
        while True:
            with self.lock:
                while (not self.closed and time.monotonic() < deadline
                       and (not self.event_versions
                            or self.event_versions[-1] <= position)):
                    self.lock.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                    if client_gone():
                        return
                if self.closed or time.monotonic() >= deadline:
                    return
                start = bisect.bisect_right(self.event_versions, position)
                records = self.events[start:]
                position = self.event_versions[-1]
            for record in records:
                event = watch_event_for(record, route, labels, fields)
                if event is not None and not write_event(event):
                    return

    # ---- writes -------------------------------------------------------------

    def read_object_body(self, request: ApiRequest, rtype: ResourceType,
                         field_validation: str) -> tuple[dict, list[str]]:
        """Parse and decode a POST or PUT body; decode errors are 400."""
        if request.content_type == PROTOBUF_MEDIA:
            obj = self.read_protobuf_body(request, rtype)
        elif request.content_type in ("", JSON_MEDIA):
            obj = request.json_body()
        else:
            raise unsupported_media_type(
                [JSON_MEDIA, PROTOBUF_MEDIA],
                "this emulator accepts JSON, and protobuf for Secrets and "
                "Namespaces only")
        if isinstance(obj, dict) and obj.get("kind") not in (None, "", rtype.kind):
            raise bad_request(
                f'{obj.get("kind")} in version "{rtype.version}" cannot be handled '
                f'as a {rtype.kind}: no kind "{obj.get("kind")}" is registered for '
                f'version "{obj.get("apiVersion", "")}"')
        try:
            warnings = decode_object(rtype, obj, field_validation)
            if rtype.is_workload:
                default_workload(rtype, obj)
        except DecodeError as error:
            raise bad_request(f'{rtype.kind} in version "{rtype.version}" cannot '
                              f'be handled as a {rtype.kind}: {error}') from None
        obj["kind"] = rtype.kind
        obj["apiVersion"] = rtype.api_version
        return obj, warnings

    @staticmethod
    def read_protobuf_body(request: ApiRequest, rtype: ResourceType) -> dict:
        try:
            obj = decode_protobuf_body(request.body)
        except UnsupportedProtobuf as error:
            raise unsupported_media_type(
                [JSON_MEDIA], f"this emulator decodes protobuf only for Secret "
                f"and Namespace, not {error}") from None
        except DecodeError as error:
            raise bad_request(f'{rtype.kind} in version "{rtype.version}" cannot '
                              f'be handled as a {rtype.kind}: {error}') from None
        request.decoded_body = copy.deepcopy(obj)
        return obj

    def create_object(self, request: ApiRequest, route: Route) -> Response:
        rtype = route.rtype
        dry_run = parse_dry_run(request)
        obj, warnings = self.read_object_body(request, rtype, field_validation_of(request))
        metadata = obj["metadata"]
        if rtype.namespaced:
            body_namespace = metadata.get("namespace") or route.namespace
            if body_namespace != route.namespace:
                raise bad_request("the namespace of the provided object does not "
                                  "match the namespace sent on the request")
            metadata["namespace"] = route.namespace
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + random_suffix()
        if metadata.get("resourceVersion"):
            raise internal_error("resourceVersion should not be set on objects to "
                                 "be created")
        for field in ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                      "managedFields", "selfLink"):
            metadata.pop(field, None)
        with self.lock:
            if rtype.namespaced and not self.namespace_exists(route.namespace):
                raise not_found(NAMESPACES, route.namespace)
            if rtype is NAMESPACES and metadata.get("name"):
                prepare_namespace(obj, None)
            errors = validate_object(rtype, obj, None)
            if errors:
                raise invalid_object(rtype, metadata.get("name", ""), errors)
            if self.key(rtype, route.namespace, metadata["name"]) in self.objects:
                raise already_exists(rtype, metadata["name"])
            if rtype.is_workload:
                metadata["generation"] = 1
                obj["status"] = {}
            if dry_run:
                metadata["uid"] = str(uuid.uuid4())
                metadata["creationTimestamp"] = now_timestamp()
                return Response(201, in_field_order(obj), warning_headers(warnings))
            stored = self.store_new(rtype, obj)
            if rtype.is_workload:
                self.start_rollout(rtype, stored, None)
                stored = self.objects[self.key(rtype, route.namespace, metadata["name"])]
            return Response(201, copy.deepcopy(stored), warning_headers(warnings))

    def replace_object(self, request: ApiRequest, route: Route) -> Response:
        rtype = route.rtype
        dry_run = parse_dry_run(request)
        obj, warnings = self.read_object_body(request, rtype, field_validation_of(request))
        check_name_and_namespace(obj, route)
        with self.lock:
            self.run_concurrent_writer(route)
            old = self.objects.get(self.key(rtype, route.namespace, route.name))
            if old is None:
                raise not_found(rtype, route.name)
            check_update_preconditions(rtype, route, old, obj["metadata"])
            return self.finish_update(rtype, route, old, obj, warnings, dry_run)

    def patch_object(self, request: ApiRequest, route: Route) -> Response:
        rtype = route.rtype
        dry_run = parse_dry_run(request)
        patch_type = request.content_type
        accepted = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]
        if patch_type == APPLY_PATCH:
            raise unsupported_media_type(
                accepted, "this emulator does not implement server-side apply, "
                "application/apply-patch+yaml")
        if patch_type not in accepted:
            raise unsupported_media_type(accepted + [APPLY_PATCH])
        patch = request.json_body()
        if patch_type in (MERGE_PATCH, STRATEGIC_PATCH) and not isinstance(patch, dict):
            raise bad_request("invalid JSON Patch" if patch_type == MERGE_PATCH
                              else "unable to find api field in struct "
                                   f"{rtype.kind} for the json field")
        with self.lock:
            self.run_concurrent_writer(route)
            old = self.objects.get(self.key(rtype, route.namespace, route.name))
            if old is None:
                raise not_found(rtype, route.name)
            patched = apply_patch(patch_type, copy.deepcopy(old), patch)
            try:
                warnings = decode_object(rtype, patched, field_validation_of(request))
                if rtype.is_workload:
                    default_workload(rtype, patched)
            except DecodeError as error:
                # The real server reports a patched object that fails to decode
                # as Invalid on the field "patch", quoting the whole object.
                text = json.dumps(apply_patch(patch_type, copy.deepcopy(old), patch),
                                  separators=(",", ":"))
                raise invalid("", "", "", "", [FieldError("patch", "Invalid",
                                                          str(error), text)]) from None
            patched["kind"] = rtype.kind
            patched["apiVersion"] = rtype.api_version
            check_name_and_namespace(patched, route)
            check_update_preconditions(rtype, route, old, patched["metadata"])
            return self.finish_update(rtype, route, old, patched, warnings, dry_run)

    def finish_update(self, rtype: ResourceType, route: Route, old: dict, new: dict,
                      warnings: list[str], dry_run: bool) -> Response:
        """Keep system fields, validate and store an update (lock held)."""
        metadata = new["metadata"]
        for field in ("uid", "creationTimestamp", "resourceVersion"):
            metadata[field] = old["metadata"][field]
        for field in ("deletionTimestamp", "managedFields", "selfLink", "generation"):
            metadata.pop(field, None)
        if rtype.namespaced:
            metadata["namespace"] = route.namespace
        if rtype is NAMESPACES:
            prepare_namespace(new, old)
        template_changed = False
        if rtype.is_workload:
            new["status"] = copy.deepcopy(old.get("status", {}))
            spec_changed = new.get("spec") != old.get("spec")
            metadata["generation"] = old["metadata"]["generation"] + int(spec_changed)
            template_changed = (new.get("spec", {}).get("template")
                                != old.get("spec", {}).get("template"))
        errors = validate_object(rtype, new, old)
        if errors:
            raise invalid_object(rtype, route.name, errors)
        if new == old or dry_run:
            # An update that changes nothing keeps the resourceVersion.
            return Response(200, in_field_order(copy.deepcopy(new)),
                            warning_headers(warnings))
        stored = self.store_update(rtype, old, new)
        if rtype.is_workload and stored["metadata"]["generation"] != old["metadata"]["generation"]:
            self.start_rollout(rtype, stored, old if template_changed else "scale")
            stored = self.objects[self.key(rtype, route.namespace, route.name)]
        return Response(200, copy.deepcopy(stored), warning_headers(warnings))

    def delete_object(self, request: ApiRequest, route: Route) -> Response:
        rtype = route.rtype
        dry_run = parse_dry_run(request)
        options = request.json_body() if request.body.strip() else {}
        if not isinstance(options, dict):
            raise bad_request("json: cannot unmarshal into Go value of type "
                              "v1.DeleteOptions")
        with self.lock:
            self.run_concurrent_writer(route)
            key = self.key(rtype, route.namespace, route.name)
            old = self.objects.get(key)
            if old is None:
                raise not_found(rtype, route.name)
            check_delete_preconditions(rtype, route, old,
                                       options.get("preconditions") or {})
            if dry_run:
                return Response(200, deletion_body(rtype, old))
            removed = [key]
            if rtype is NAMESPACES:
                removed += [other for other in self.objects
                            if other[1] == route.name and other[0] != NAMESPACES.plural]
            for removed_key in removed:
                self.delete_stored(removed_key)
            return Response(200, deletion_body(rtype, old))

    def delete_stored(self, key: tuple[str, str, str]) -> None:
        obj = self.objects.pop(key)
        self.rollouts.pop(key, None)
        rtype = next(t for t in RESOURCE_TYPES if t.qualified_resource == key[0])
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.next_version())
        self.record_event(rtype, "DELETED", obj, gone)

    def run_concurrent_writer(self, route: Route) -> None:
        """Let an armed conflict rule change the object before this write."""
        key = self.key(route.rtype, route.namespace, route.name)
        rule = self.conflict_rules.get(key)
        old = self.objects.get(key)
        if rule is None or old is None:
            return
        rule.count -= 1
        if rule.count <= 0:
            del self.conflict_rules[key]
        changed = copy.deepcopy(old)
        annotations = changed["metadata"].setdefault("annotations", {})
        annotations[CONCURRENT_WRITER_ANNOTATION] = str(self.resource_version + 1)
        if rule.data_key and route.rtype is SECRETS:
            marker = f"written by a concurrent writer at {self.resource_version + 1}"
            changed.setdefault("data", {})[rule.data_key] = base64.b64encode(
                marker.encode()).decode()
        self.store_update(route.rtype, old, changed)

    # ---- simulated rollouts -----------------------------------------------

    def start_rollout(self, rtype: ResourceType, obj: dict, old: Any) -> None:
        """Begin simulating the controller's reaction to a new generation.

        old is None for a new object, "scale" for a spec change that keeps
        the pod template, or the previous object for a template change.
        """
        metadata = obj["metadata"]
        key = self.key(rtype, metadata["namespace"], metadata["name"])
        active = self.rollouts.get(key)
        replicas = self.desired_pods(rtype, obj)
        new_hash = template_hash(obj["spec"].get("template"))
        revision = int((metadata.get("annotations") or {}).get(
            DEPLOYMENT_REVISION_ANNOTATION, "0") or 0)
        if old is None:
            old_pods, old_hash, template_changed, revision = 0, new_hash, True, 1
        elif old == "scale":
            old_pods = active.old_pods if active else replicas
            old_hash = active.old_hash if active else new_hash
            template_changed = bool(active and active.template_changed)
            revision = active.revision if active else revision
        else:
            old_pods = self.desired_pods(rtype, old)
            old_hash = template_hash(old["spec"].get("template"))
            template_changed = True
            revision += 1
        rollout = Rollout(time.monotonic(), metadata["generation"], replicas,
                          old_pods, template_changed, new_hash, old_hash, revision)
        if key in self.stalls:
            rollout.ready_cap = 0
        self.rollouts[key] = rollout
        self.advance_rollouts()

    def desired_pods(self, rtype: ResourceType, obj: dict) -> int:
        if rtype is DAEMONSETS:
            seeded = (obj.get("status") or {}).get("desiredNumberScheduled")
            return seeded if isinstance(seeded, int) else self.node_count
        replicas = obj["spec"].get("replicas", 1)
        return replicas if isinstance(replicas, int) else 1

    def progress_of(self, rollout: Rollout, paused: bool) -> Progress:
        step = self.rollout_step
        ticks = int((time.monotonic() - rollout.started) / step) if step > 0 else 10**9
        total = rollout.replicas
        if ticks < 1:
            return Progress(False, 0, 0, False, rollout.started)
        if paused:
            return Progress(True, 0, 0, False, rollout.started + step)
        if not rollout.template_changed:
            return Progress(True, total, total, True, rollout.started + step)
        # A new pod starts at each tick and becomes ready one tick later.
        cap = rollout.ready_cap
        new_ready = max(0, min(ticks - 1, total))
        updated = min(ticks, total)
        last_change_tick = ticks
        if cap is not None:
            # While stalled, one more new pod starts and never becomes ready.
            new_ready = min(new_ready, cap)
            updated = min(updated, cap + 1)
            last_change_tick = min(ticks, cap + 1)
        last_progress = rollout.started + last_change_tick * step
        return Progress(True, updated, new_ready, new_ready == total, last_progress)

    def advance_rollouts(self) -> None:
        """Write the status each active rollout has reached (lock held)."""
        for key, rollout in list(self.rollouts.items()):
            obj = self.objects.get(key)
            if obj is None:
                del self.rollouts[key]
                continue
            rtype = next(t for t in RESOURCE_TYPES if t.qualified_resource == key[0])
            paused = rtype is DEPLOYMENTS and bool(obj["spec"].get("paused"))
            progress = self.progress_of(rollout, paused)
            if not progress.observed:
                continue
            updated = copy.deepcopy(obj)
            stall = self.stalls.get(key)
            build = {DEPLOYMENTS: self.deployment_status,
                     STATEFULSETS: statefulset_status,
                     DAEMONSETS: daemonset_status}[rtype]
            if rtype is DEPLOYMENTS:
                updated["status"] = build(obj, rollout, progress, paused, stall)
                annotations = updated["metadata"].setdefault("annotations", {})
                annotations[DEPLOYMENT_REVISION_ANNOTATION] = str(rollout.revision)
            else:
                updated["status"] = build(obj, rollout, progress)
            if updated != obj:
                self.store_update(rtype, obj, updated)
            if progress.done and not paused:
                del self.rollouts[key]

    def deployment_status(self, obj: dict, rollout: Rollout, progress: Progress,
                          paused: bool, stall: StallRule | None) -> dict:
        spec = obj["spec"]
        total = rollout.replicas
        old_pods = 0 if progress.done else max(0, rollout.old_pods - progress.new_ready)
        if paused:
            old_pods = rollout.old_pods
        pods = progress.updated + old_pods
        available = progress.new_ready + old_pods
        max_unavailable = scaled_count(
            ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get(
                "maxUnavailable", 0), total, round_up=False)
        replica_set = f'ReplicaSet "{obj["metadata"]["name"]}-{rollout.new_hash}"'
        if paused:
            progressing = ("Unknown", "DeploymentPaused",
                           "Deployment is paused")
        elif progress.done:
            progressing = ("True", "NewReplicaSetAvailable",
                           f"{replica_set} has successfully progressed.")
        else:
            progressing = ("True", "ReplicaSetUpdated", f"{replica_set} is progressing.")
            deadline = spec.get("progressDeadlineSeconds", 600)
            if stall and stall.progress_deadline_seconds is not None:
                deadline = stall.progress_deadline_seconds
            if (rollout.ready_cap is not None
                    and time.monotonic() - progress.last_progress > deadline):
                progressing = ("False", "ProgressDeadlineExceeded",
                               f"{replica_set} has timed out progressing.")
        if available >= total - max_unavailable:
            availability = ("True", "MinimumReplicasAvailable",
                            "Deployment has minimum availability.")
        else:
            availability = ("False", "MinimumReplicasUnavailable",
                            "Deployment does not have minimum availability.")
        old_conditions = (obj.get("status") or {}).get("conditions") or []
        conditions = [
            merge_condition(old_conditions, "Available", *availability),
            merge_condition(old_conditions, "Progressing", *progressing),
        ]
        return without_zero({
            "observedGeneration": rollout.generation,
            "replicas": pods,
            "updatedReplicas": progress.updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(0, pods - available),
            "conditions": conditions,
        })

    def completed_status(self, rtype: ResourceType, obj: dict) -> dict:
        """Status of a workload whose rollout finished long ago (for seeds)."""
        total = self.desired_pods(rtype, obj)
        new_hash = template_hash(obj["spec"].get("template"))
        rollout = Rollout(0.0, obj["metadata"]["generation"], total, 0, True,
                          new_hash, new_hash, 1)
        progress = Progress(True, total, total, True, 0.0)
        if rtype is DEPLOYMENTS:
            return self.deployment_status(obj, rollout, progress, False, None)
        if rtype is STATEFULSETS:
            return statefulset_status(obj, rollout, progress)
        return daemonset_status(obj, rollout, progress)

    # ---- control API ------------------------------------------------------

    def seed(self, items: Any) -> list[dict]:
        """Create objects for a test; all or nothing."""
        if isinstance(items, dict) and "items" in items:
            items = items["items"]
        if not isinstance(items, list):
            raise ControlError("seed expects a list of objects or {\"items\": [...]}")
        with self.lock:
            saved = (copy.deepcopy(self.objects), copy.deepcopy(self.rollouts),
                     self.resource_version, list(self.events),
                     list(self.event_versions))
            try:
                return [self.seed_one(index, item) for index, item in enumerate(items)]
            except BaseException:
                (self.objects, self.rollouts, self.resource_version,
                 self.events, self.event_versions) = saved
                raise

    def seed_one(self, index: int, item: Any) -> dict:
        if not isinstance(item, dict):
            raise ControlError(f"seed item {index} is not an object")
        rtype = resource_type_for_object(item)
        if rtype is None:
            raise ControlError(f"seed item {index}: unsupported kind "
                               f"{item.get('kind')!r} (apiVersion "
                               f"{item.get('apiVersion')!r})")

        obj = copy.deepcopy(item)
        seeded_status = obj.get("status")
        try:
            decode_object(rtype, obj, "Strict")
        except DecodeError as error:
            raise ControlError(f"seed item {index}: {error}") from None
        obj["kind"], obj["apiVersion"] = rtype.kind, rtype.api_version

        metadata = obj["metadata"]
        name = metadata.get("name", "")
        namespace = (metadata.get("namespace") or "default") if rtype.namespaced else ""
        if rtype.namespaced:
            metadata["namespace"] = namespace
            if not self.namespace_exists(namespace):
                self.store_new(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": namespace}})

        existing = self.objects.get(self.key(rtype, namespace, name))
        if rtype is NAMESPACES and existing is not None:
            return self.seed_existing_namespace(existing, metadata)
        if rtype is NAMESPACES and name:
            prepare_namespace(obj, None)
        if rtype.is_workload:
            fill_seed_workload(obj)
            try:
                default_workload(rtype, obj)
            except DecodeError as error:
                raise ControlError(f"seed item {index}: {error}") from None
            metadata["generation"] = 1

        errors = validate_object(rtype, obj, None)
        if errors:
            raise ControlError(f"seed item {index}: "
                               + "; ".join(str(error) for error in errors))
        if existing is not None:
            raise ControlError(f"seed item {index}: {rtype.qualified_resource} "
                               f"{namespace}/{name} already exists")
        if rtype.is_workload:
            obj["status"] = (seeded_status if isinstance(seeded_status, dict)
                             and seeded_status else self.completed_status(rtype, obj))
            if rtype is DEPLOYMENTS:
                metadata.setdefault("annotations", {}).setdefault(
                    DEPLOYMENT_REVISION_ANNOTATION, "1")

        stored = self.store_new(rtype, obj)
        return {"kind": rtype.kind, "namespace": namespace, "name": name,
                "resourceVersion": stored["metadata"]["resourceVersion"]}

    def seed_existing_namespace(self, existing: dict, metadata: dict) -> dict:
        """Merge a seeded Namespace's labels and annotations into one that exists.

        Namespaces are created on demand for seeded objects and at start
        (default, kube-system, ...), so a seed may name one that exists.
        """
        updated = copy.deepcopy(existing)
        for field in ("labels", "annotations"):
            if metadata.get(field):
                updated["metadata"].setdefault(field, {}).update(metadata[field])
        prepare_namespace(updated, existing)
        stored = existing if updated == existing else self.store_update(
            NAMESPACES, existing, updated)
        return {"kind": "Namespace", "namespace": "", "name": stored["metadata"]["name"],
                "resourceVersion": stored["metadata"]["resourceVersion"]}

    def add_stall(self, body: dict) -> dict:
        rtype = resource_type_for_name(str(body.get("kind", "")))
        if rtype is None or not rtype.is_workload:
            raise ControlError("stall needs kind: deployments, statefulsets or "
                               "daemonsets")
        key = self.key(rtype, require_str(body, "namespace"), require_str(body, "name"))
        deadline = body.get("progress_deadline_seconds")
        if deadline is not None and not isinstance(deadline, (int, float)):
            raise ControlError("progress_deadline_seconds must be a number")
        with self.lock:
            self.advance_rollouts()
            self.stalls[key] = StallRule(deadline)
            rollout = self.rollouts.get(key)
            if rollout is not None and rollout.ready_cap is None:
                progress = self.progress_of(rollout, False)
                rollout.ready_cap = progress.new_ready
        return {"stalled": list(key)}

    def clear_stalls(self) -> None:
        with self.lock:
            self.stalls.clear()
            for rollout in self.rollouts.values():
                if rollout.ready_cap is not None:
                    # Continue from where the rollout stopped.
                    rollout.started = (time.monotonic()
                                       - (rollout.ready_cap + 1) * self.rollout_step)
                    rollout.ready_cap = None

    def log_request(self, request: ApiRequest, status: int) -> None:
        body: Any = request.decoded_body
        if body is None and request.body:
            try:
                body = json.loads(request.body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = request.body.decode("utf-8", "replace")
        with self.lock:
            self.request_sequence += 1
            self.request_log.append({
                "seq": self.request_sequence,
                "time": now_timestamp(),
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "content_type": request.content_type,
                "user_agent": request.headers.get("User-Agent", ""),
                "body": body,
                "status": status,
            })

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()


class ControlError(ValueError):
    """A malformed request to the /_emulator/ control API."""


def require_str(body: dict, field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise ControlError(f"missing or empty string field {field!r}")
    return value


def fill_seed_workload(obj: dict) -> None:
    """Give a seeded workload the selector, labels and container it lacks.

    Seeds are test fixtures, so a bare {"kind": "Deployment", "metadata":
    {"name": "web"}} is accepted; a POST through the API is validated in full.
    """
    name = obj["metadata"].get("name", "")
    spec = obj.setdefault("spec", {})
    template = spec.setdefault("template", {})
    template_metadata = template.setdefault("metadata", {})
    labels = template_metadata.setdefault("labels", {})
    if not labels:
        labels["app"] = name
    spec.setdefault("selector", {"matchLabels": dict(labels)})
    pod_spec = template.setdefault("spec", {})
    if not pod_spec.get("containers"):
        pod_spec["containers"] = [{"name": "app", "image": "registry.test/app:1.0"}]


def merge_condition(old_conditions: list, kind: str, status: str, reason: str,
                    message: str) -> dict:
    """Build a condition, keeping timestamps when nothing about it changed."""
    now = now_timestamp()
    previous = next((c for c in old_conditions if c.get("type") == kind), None)
    if previous is None:
        transition = update = now
    elif previous.get("status") != status:
        transition = update = now
    elif (previous.get("reason"), previous.get("message")) != (reason, message):
        transition, update = previous.get("lastTransitionTime", now), now
    else:
        transition = previous.get("lastTransitionTime", now)
        update = previous.get("lastUpdateTime", now)
    return {"type": kind, "status": status, "lastUpdateTime": update,
            "lastTransitionTime": transition, "reason": reason, "message": message}


def without_zero(status: dict) -> dict:
    """Drop zero counts, as Go's omitempty does for these status fields."""
    return {key: value for key, value in status.items() if value not in (0, None)}


def statefulset_status(obj: dict, rollout: Rollout, progress: Progress) -> dict:
    total = rollout.replicas
    name = obj["metadata"]["name"]
    update_revision = f"{name}-{rollout.new_hash}"
    current_revision = update_revision
    if rollout.old_pods == 0 or progress.done:
        pods = progress.updated if not progress.done else total
        ready = progress.new_ready
        current = pods
    else:
        # Pods are replaced one at a time from the highest ordinal down, so
        # the pod being replaced is the only one not ready.
        pods = total
        ready = total - (progress.updated - progress.new_ready)
        current = total - progress.updated
        current_revision = f"{name}-{rollout.old_hash}"
    status = without_zero({
        "observedGeneration": rollout.generation,
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": progress.updated,
    })
    status["replicas"] = pods
    status["availableReplicas"] = ready
    status["currentRevision"] = current_revision
    status["updateRevision"] = update_revision
    status["collisionCount"] = 0
    return status


def daemonset_status(obj: dict, rollout: Rollout, progress: Progress) -> dict:
    desired = rollout.replicas
    if rollout.old_pods == 0 and not progress.done:
        scheduled = progress.updated
        ready = progress.new_ready
    else:
        # maxUnavailable 1: the old pod on a node goes before the new one starts.
        old_pods = 0 if progress.done else desired - progress.updated
        scheduled = desired
        ready = old_pods + progress.new_ready
    status = {
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": desired,
        "numberReady": ready,
    }
    status.update(without_zero({
        "observedGeneration": rollout.generation,
        "updatedNumberScheduled": progress.updated,
        "numberAvailable": ready,
        "numberUnavailable": desired - ready,
    }))
    return status


# --------------------------------------------------------------------------
# Request helpers


def parse_route(path: str) -> Route:
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        # Outside /api and /apis the real server answers in plain text.
        raise ApiError(failure_status(404, "NotFound", "404 page not found"),
                       plain_text="404 page not found\n")
    if (group, version) not in GROUP_VERSIONS or not rest:
        raise resource_not_found()
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    rtype = find_resource_type(group, version, rest[0])
    if rtype is None or len(rest) > 2:
        raise resource_not_found()
    if namespace and not rtype.namespaced:
        raise resource_not_found()
    name = rest[1] if len(rest) == 2 else ""
    if name and rtype.namespaced and not namespace:
        raise resource_not_found()
    return Route(rtype, namespace, name)


def request_verb(request: ApiRequest, route: Route) -> str:
    watching = request.param("watch") in ("true", "1")
    if request.method == "GET":
        if watching:
            return "watch"
        return "get" if route.name else "list"
    if request.method == "POST":
        return "create" if not route.name else "unsupported"
    if request.method == "PUT":
        return "update" if route.name else "unsupported"
    if request.method == "PATCH":
        return "patch" if route.name else "unsupported"
    if request.method == "DELETE":
        return "delete" if route.name else "deletecollection"
    return "unsupported"


def parse_selectors(request: ApiRequest, rtype: ResourceType) -> tuple[list, list]:
    try:
        labels = parse_label_selector(request.param("labelSelector"))
        fields = parse_field_selector(request.param("fieldSelector"), rtype)
    except SelectorError as error:
        raise bad_request(str(error)) from None
    return labels, fields


def parse_int_param(request: ApiRequest, name: str, default: int) -> int:
    text = request.param(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f'invalid value for {name}: "{text}"') from None
    if value < 0:
        raise bad_request(f"{name} must not be negative")
    return value


def parse_dry_run(request: ApiRequest) -> bool:
    value = request.param("dryRun")
    if value and value != "All":
        raise bad_request(f'Invalid dry run value: dryRun: Unsupported value: '
                          f'"{value}": supported values: "All"')
    return value == "All"


def field_validation_of(request: ApiRequest) -> str:
    value = request.param("fieldValidation") or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise bad_request(f"fieldValidation parameter unsupported: {value}")
    return value


def warning_headers(warnings: list[str]) -> list:
    return [("Warning", "299 - " + json.dumps(warning)) for warning in warnings]


def random_suffix() -> str:
    return "".join(random_tokens.choice(SAFE_HASH_ALPHABET) for _ in range(5))


def check_name_and_namespace(obj: dict, route: Route) -> None:
    metadata = obj["metadata"]
    name = metadata.get("name", "")
    if name != route.name:
        raise bad_request(f"the name of the object ({name}) does not match the "
                          f"name on the URL ({route.name})")
    body_namespace = metadata.get("namespace") or ""
    if route.rtype.namespaced and body_namespace not in ("", route.namespace):
        raise bad_request("the namespace of the provided object does not match "
                          "the namespace sent on the request")


def check_update_preconditions(rtype: ResourceType, route: Route, old: dict,
                                metadata: dict) -> None:
    """Apply the uid and resourceVersion preconditions carried by an update.

    An empty resourceVersion means an unconditional update, which the real
    server allows for Secrets, Namespaces and apps/v1 workloads.
    """
    old_metadata = old["metadata"]
    uid = metadata.get("uid")
    if uid and uid != old_metadata["uid"]:
        raise precondition_conflict(rtype, route.namespace, route.name, "UID",
                                    uid, old_metadata["uid"])
    version = metadata.get("resourceVersion")
    if not version:
        return
    if not isinstance(version, str) or not version.isdigit():
        # The real server fails to parse it in the storage layer and reports
        # the resource (not the Kind) as invalid.
        raise invalid(rtype.plural, rtype.group, rtype.plural, route.name, [
            FieldError("resourceVersion", "Invalid",
                       f'strconv.ParseUint: parsing {go_quote(str(version))}: '
                       f'invalid syntax', str(version))])
    if version != old_metadata["resourceVersion"]:
        raise conflict(rtype, route.name, OPTIMISTIC_LOCK_MESSAGE)


def check_delete_preconditions(rtype: ResourceType, route: Route, old: dict,
                               preconditions: Any) -> None:
    if not isinstance(preconditions, dict):
        raise bad_request("json: cannot unmarshal into Go struct field "
                          "DeleteOptions.preconditions of type v1.Preconditions")
    old_metadata = old["metadata"]
    uid = preconditions.get("uid")
    if uid and uid != old_metadata["uid"]:
        raise precondition_conflict(rtype, route.namespace, route.name, "UID",
                                    uid, old_metadata["uid"])
    version = preconditions.get("resourceVersion")
    if version and version != old_metadata["resourceVersion"]:
        raise precondition_conflict(rtype, route.namespace, route.name,
                                    "ResourceVersion", version,
                                    old_metadata["resourceVersion"])


def apply_patch(patch_type: str, current: dict, patch: Any) -> dict:
    if patch_type == MERGE_PATCH:
        return merge_patch(current, patch)
    if patch_type == STRATEGIC_PATCH:
        result = strategic_merge(current, patch)
        return result if isinstance(result, dict) else {}
    try:
        result = apply_json_patch(current, patch)
    except ValueError as error:
        raise bad_request(str(error)) from None
    except JsonPatchError as error:
        raise json_patch_failure(str(error)) from None
    if not isinstance(result, dict):
        raise json_patch_failure("the patched document is not an object")
    return result


def deletion_body(rtype: ResourceType, old: dict) -> dict:
    """Body of a successful DELETE: a Status, or the Namespace as Terminating."""
    if rtype is NAMESPACES:
        obj = copy.deepcopy(old)
        obj["metadata"]["deletionTimestamp"] = now_timestamp()
        obj["status"] = {"phase": "Terminating"}
        return obj
    details = resource_details(rtype, old["metadata"]["name"])
    details["uid"] = old["metadata"]["uid"]
    return {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success", "details": details}


def object_sort_key(obj: dict) -> str:
    metadata = obj["metadata"]
    return f'{metadata.get("namespace", "")}/{metadata["name"]}'


def encode_continue(start_after: str) -> str:
    token = json.dumps({"v": "meta.k8s.io/v1", "start": start_after})
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def decode_continue(token: str) -> str | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded))["start"]
    except (ValueError, KeyError, TypeError):
        raise bad_request("continue key is not valid: illegal base64 data") from None


def watch_event_for(record: WatchRecord, route: Route, labels: list,
                    fields: list) -> dict | None:
    """Translate a stored change into the event this watcher receives, if any."""
    if record.type_name != route.rtype.qualified_resource:
        return None
    if route.namespace and record.namespace != route.namespace:
        return None

    def matches(obj: dict | None) -> bool:
        return (obj is not None
                and labels_match(labels, obj["metadata"].get("labels") or {})
                and fields_match(fields, obj))

    before, after = matches(record.before), matches(record.after)
    if record.event_type == "DELETED":
        event_type = "DELETED" if before else None
    elif before and after:
        event_type = "MODIFIED"
    elif after:
        event_type = "ADDED"
    elif before:
        event_type = "DELETED"
    else:
        event_type = None
    if event_type is None:
        return None
    return {"type": event_type, "object": copy.deepcopy(record.after)}


def accept_parameters(request: ApiRequest) -> list[dict[str, str]]:
    """Split the Accept header into media ranges with their parameters."""
    ranges = []
    for part in request.headers.get("Accept", "").split(","):
        pieces = [piece.strip() for piece in part.split(";")]
        params = {"media": pieces[0]}
        for piece in pieces[1:]:
            if "=" in piece:
                key, value = piece.split("=", 1)
                params[key.strip()] = value.strip()
        ranges.append(params)
    return ranges


def wants_aggregated_discovery(request: ApiRequest) -> bool:
    return any(params.get("as") == "APIGroupDiscoveryList"
               and params.get("v") in ("v2", "v2beta1")
               for params in accept_parameters(request))


def wants_metadata_only(request: ApiRequest, list_kind: bool) -> bool:
    wanted = "PartialObjectMetadataList" if list_kind else "PartialObjectMetadata"
    return any(params.get("as") == wanted for params in accept_parameters(request))


def wants_table(request: ApiRequest) -> bool:
    return any(params.get("as") == "Table" and params.get("g") == "meta.k8s.io"
               for params in accept_parameters(request))


def human_duration(seconds: float) -> str:
    """Format an age as kubectl's AGE column does (Go's duration.HumanDuration)."""
    seconds = int(seconds)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    years = days // 365
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if years < 2:
        return f"{days}d"
    if years < 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def object_age(obj: dict) -> str:
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return "<unknown>"
    started = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc)
    return human_duration((datetime.now(timezone.utc) - started).total_seconds())


def pod_template_columns(obj: dict) -> list[str]:
    containers = ((obj.get("spec") or {}).get("template") or {}).get(
        "spec", {}).get("containers") or []
    return [",".join(str(c.get("name", "")) for c in containers),
            ",".join(str(c.get("image", "")) for c in containers)]


def table_columns(rtype: ResourceType) -> list[tuple[str, str, int]]:
    """(column name, type, priority) as the real server's printers define them."""
    name, age = ("Name", "string", 0), ("Age", "string", 0)
    if rtype is SECRETS:
        return [name, ("Type", "string", 0), ("Data", "integer", 0), age]
    if rtype is NAMESPACES:
        return [name, ("Status", "string", 0), age]
    images = [("Containers", "string", 1), ("Images", "string", 1)]
    if rtype is DEPLOYMENTS:
        return [name, ("Ready", "string", 0), ("Up-to-date", "integer", 0),
                ("Available", "integer", 0), age, *images, ("Selector", "string", 1)]
    if rtype is STATEFULSETS:
        return [name, ("Ready", "string", 0), age, *images]
    return [name, ("Desired", "integer", 0), ("Current", "integer", 0),
            ("Ready", "integer", 0), ("Up-to-date", "integer", 0),
            ("Available", "integer", 0), ("Node Selector", "string", 0), age,
            *images, ("Selector", "string", 1)]


def table_cells(rtype: ResourceType, obj: dict) -> list:
    name, age = obj["metadata"]["name"], object_age(obj)
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if rtype is SECRETS:
        return [name, obj.get("type", ""), len(obj.get("data") or {}), age]
    if rtype is NAMESPACES:
        return [name, status.get("phase", ""), age]
    selector = ",".join(f"{key}={value}" for key, value in
                        ((spec.get("selector") or {}).get("matchLabels") or {}).items())
    if rtype is DEPLOYMENTS:
        return [name, f'{status.get("readyReplicas", 0)}/{spec.get("replicas", 0)}',
                status.get("updatedReplicas", 0), status.get("availableReplicas", 0),
                age, *pod_template_columns(obj), selector]
    if rtype is STATEFULSETS:
        return [name, f'{status.get("readyReplicas", 0)}/{spec.get("replicas", 0)}',
                age, *pod_template_columns(obj)]
    node_selector = ",".join(
        f"{key}={value}" for key, value in
        (((spec.get("template") or {}).get("spec") or {}).get("nodeSelector")
         or {}).items()) or "<none>"
    return [name, status.get("desiredNumberScheduled", 0),
            status.get("currentNumberScheduled", 0), status.get("numberReady", 0),
            status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0),
            node_selector, age, *pod_template_columns(obj), selector]


def as_table(request: ApiRequest, rtype: ResourceType, objects: list[dict],
             metadata: dict) -> dict:
    """Render objects as a meta.k8s.io/v1 Table, as kubectl get requests."""
    include = request.param("includeObject") or "Metadata"
    rows = []
    for obj in objects:
        row: dict = {"cells": table_cells(rtype, obj)}
        if include == "Object":
            row["object"] = {"kind": rtype.kind, "apiVersion": rtype.api_version,
                             **{k: v for k, v in obj.items()
                                if k not in ("kind", "apiVersion")}}
        elif include == "Metadata":
            row["object"] = {"kind": "PartialObjectMetadata",
                             "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    columns = [{"name": name, "type": kind, "format": "name" if name == "Name" else "",
                "description": "", "priority": priority}
               for name, kind, priority in table_columns(rtype)]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": columns, "rows": rows}


def present_object(request: ApiRequest, rtype: ResourceType, obj: dict) -> dict:
    if wants_table(request):
        return as_table(request, rtype, [obj],
                        {"resourceVersion": obj["metadata"]["resourceVersion"]})
    if wants_metadata_only(request, list_kind=False):
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"]}
    return obj


def present_list(request: ApiRequest, rtype: ResourceType, body: dict) -> dict:
    if wants_table(request):
        return as_table(request, rtype, body["items"], body["metadata"])
    if wants_metadata_only(request, list_kind=True):
        return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": body["metadata"],
                "items": [{"metadata": item["metadata"]} for item in body["items"]]}
    return body


def api_group_document(group: str) -> dict:
    version = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"name": group, "versions": [version], "preferredVersion": version}


def resource_list_document(group: str, version: str) -> dict:
    resources = []
    for rtype in RESOURCE_TYPES:
        if (rtype.group, rtype.version) != (group, version):
            continue
        entry = {"name": rtype.plural, "singularName": rtype.singular,
                 "namespaced": rtype.namespaced, "kind": rtype.kind,
                 "verbs": rtype.verbs}
        if rtype.short_names:
            entry["shortNames"] = list(rtype.short_names)
        if rtype.categories:
            entry["categories"] = list(rtype.categories)
        resources.append(entry)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources}


def aggregated_discovery(path: str) -> Response:
    """Aggregated discovery (apidiscovery.k8s.io/v2) for /api or /apis."""
    group = "" if path == "/api" else "apps"
    resources = []
    for rtype in RESOURCE_TYPES:
        if rtype.group != group:
            continue
        entry = {
            "resource": rtype.plural,
            "responseKind": {"group": group, "version": rtype.version,
                             "kind": rtype.kind},
            "scope": "Namespaced" if rtype.namespaced else "Cluster",
            "singularResource": rtype.singular,
            "verbs": rtype.verbs,
        }
        if rtype.short_names:
            entry["shortNames"] = list(rtype.short_names)
        if rtype.categories:
            entry["categories"] = list(rtype.categories)
        resources.append(entry)
    metadata = {"name": group, "creationTimestamp": None} if group else {
        "creationTimestamp": None}
    body = {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{"metadata": metadata, "versions": [
            {"version": "v1", "resources": resources, "freshness": "Current"}]}],
    }
    content_type = ("application/json;g=apidiscovery.k8s.io;v=v2;"
                    "as=APIGroupDiscoveryList")
    return Response(200, body, content_type=content_type)


# --------------------------------------------------------------------------
# Control API


def parse_forbid_rule(body: Any, default_user: str) -> ForbidRule:
    if not isinstance(body, dict):
        raise ControlError("forbid expects a JSON object")
    verbs = body.get("verbs")
    if not isinstance(verbs, list) or not verbs or not all(
            isinstance(verb, str) for verb in verbs):
        raise ControlError("forbid needs verbs, a non-empty list such as "
                           '["update", "patch"]')
    resource = body.get("resource", "secrets")
    if not isinstance(resource, str):
        raise ControlError("resource must be a string")
    namespace = body.get("namespace")
    name = body.get("name")
    user = body.get("user", default_user)
    for field, value in (("namespace", namespace), ("name", name), ("user", user)):
        if value is not None and not isinstance(value, str):
            raise ControlError(f"{field} must be a string")
    return ForbidRule(verbs, resource, namespace, name, user)


def parse_fail_rule(body: Any) -> FailRule:
    if not isinstance(body, dict):
        raise ControlError("fail expects a JSON object")
    try:
        pattern = re.compile(require_str(body, "path_regex"))
    except re.error as error:
        raise ControlError(f"path_regex is not a valid regular expression: {error}") from None
    status = body.get("status")
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise ControlError("status must be an HTTP error code from 400 to 599")
    count = body.get("count", 1)
    if not isinstance(count, int) or count < 1:
        raise ControlError("count must be a positive integer")
    retry_after = body.get("retry_after")
    if retry_after is not None and (not isinstance(retry_after, int) or retry_after < 0):
        raise ControlError("retry_after must be a non-negative integer (seconds)")
    method = str(body.get("method") or "*").upper()
    return FailRule(method, pattern, status, count, retry_after,
                    body.get("reason"), body.get("message"))


def parse_conflict_rule(body: Any) -> tuple[tuple[str, str, str], ConflictRule]:
    if not isinstance(body, dict):
        raise ControlError("conflict expects a JSON object")
    rtype = resource_type_for_name(str(body.get("resource") or body.get("kind")
                                       or "secrets"))
    if rtype is None:
        raise ControlError("unknown resource; use secrets, deployments, "
                           "statefulsets, daemonsets or namespaces")
    count = body.get("count", 1)
    if not isinstance(count, int) or count < 1:
        raise ControlError("count must be a positive integer")
    data_key = body.get("data_key")
    if data_key is not None and not isinstance(data_key, str):
        raise ControlError("data_key must be a string")
    namespace = require_str(body, "namespace") if rtype.namespaced else ""
    key = Emulator.key(rtype, namespace, require_str(body, "name"))
    return key, ConflictRule(count, data_key)


def handle_control(emulator: Emulator, method: str, path: str,
                   body: Any) -> tuple[int, Any]:
    """Answer a /_emulator/ request with (HTTP status, JSON body)."""
    action = path[len("/_emulator/"):].strip("/")
    if (action, method) == ("seed", "POST"):
        return 201, {"created": emulator.seed(body)}
    if (action, method) == ("reset", "POST"):
        emulator.reset()
        return 200, {"reset": True}
    if action == "requests":
        with emulator.lock:
            if method == "GET":
                return 200, {"requests": copy.deepcopy(emulator.request_log)}
            if method == "DELETE":
                emulator.request_log = []
                return 200, {"cleared": True}
    if action == "forbid":
        with emulator.lock:
            if method == "POST":
                emulator.forbid_rules.append(
                    parse_forbid_rule(body, emulator.default_user))
                return 201, {"rules": len(emulator.forbid_rules)}
            if method == "GET":
                return 200, {"rules": [dataclasses.asdict(rule)
                                       for rule in emulator.forbid_rules]}
            if method == "DELETE":
                emulator.forbid_rules = []
                return 200, {"cleared": True}
    if action == "fail":
        with emulator.lock:
            if method == "POST":
                emulator.fail_rules.append(parse_fail_rule(body))
                return 201, {"rules": len(emulator.fail_rules)}
            if method == "GET":
                return 200, {"rules": [rule.describe() for rule in emulator.fail_rules]}
            if method == "DELETE":
                emulator.fail_rules = []
                return 200, {"cleared": True}
    if action == "conflict":
        with emulator.lock:
            if method == "POST":
                key, rule = parse_conflict_rule(body)
                emulator.conflict_rules[key] = rule
                return 201, {"armed": list(key), "count": rule.count}
            if method == "GET":
                return 200, {"rules": [{"key": list(key), "count": rule.count}
                                       for key, rule in emulator.conflict_rules.items()]}
            if method == "DELETE":
                emulator.conflict_rules = {}
                return 200, {"cleared": True}
    if action == "stall":
        if method == "POST":
            if not isinstance(body, dict):
                raise ControlError("stall expects a JSON object")
            return 201, emulator.add_stall(body)
        if method == "GET":
            with emulator.lock:
                return 200, {"stalled": [list(key) for key in emulator.stalls]}
        if method == "DELETE":
            emulator.clear_stalls()
            return 200, {"cleared": True}
    return 404, {"error": f"no control endpoint {method} {path}"}


# --------------------------------------------------------------------------
# HTTP layer


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "k8s-emulator"
    # Headers and body go out in separate writes. With Nagle's algorithm
    # the body then waits for the client's delayed ACK of the headers, up
    # to 40 ms on Linux, on every kept-alive connection. The real API
    # server (Go's net/http) sets TCP_NODELAY, and so does this one.
    disable_nagle_algorithm = True
    emulator: Emulator  # set on the subclass made by make_handler
    verbose = False

    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Request lines hold paths and selectors only, never bodies.
        if self.verbose:
            sys.stderr.write(f"k8s-emulator: {format % args}\n")

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {key: values[-1] for key, values in
                 urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        content_type = (self.headers.get("Content-Type") or "").split(";")[0]
        request = ApiRequest(self.command, url.path, query, self.headers,
                             self.read_body(), content_type.strip().lower())
        if url.path.startswith("/_emulator/"):
            self.dispatch_control(request)
            return
        try:
            response = self.emulator.handle(request)
        except ApiError as error:
            response = Response(error.code, error.plain_text or error.status,
                                error.headers)
            if error.plain_text:
                response.content_type = "text/plain; charset=utf-8"
        except Exception:  # noqa: BLE001 (answer 500, keep serving)
            sys.stderr.write("k8s-emulator: internal error on "
                             f"{request.method} {request.path}\n")
            traceback.print_exc()
            response = Response(500, internal_error("emulator bug").status)
        self.emulator.log_request(request, response.code)
        if response.watch is not None:
            self.send_watch(response)
        else:
            self.send_body(response)

    def dispatch_control(self, request: ApiRequest) -> None:
        try:
            body = json.loads(request.body.decode("utf-8")) if request.body.strip() else None
            code, answer = handle_control(self.emulator, request.method,
                                          request.path, body)
        except (ControlError, UnicodeDecodeError, json.JSONDecodeError) as error:
            code, answer = 400, {"error": str(error)}
        except Exception as error:  # noqa: BLE001 (answer 500, keep serving)
            traceback.print_exc()
            code, answer = 500, {"error": f"emulator bug: {error!r}"}
        self.send_body(Response(code, answer))

    def send_body(self, response: Response) -> None:
        if isinstance(response.body, str):
            payload = response.body.encode("utf-8")
        else:
            payload = (json.dumps(response.body, separators=(",", ":")) + "\n").encode()
        self.send_response(response.code)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def send_watch(self, response: Response) -> None:
        self.send_response(200)
        self.send_header("Content-Type", JSON_MEDIA)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

        def write_event(event: dict) -> bool:
            line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
            try:
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            except OSError:
                return False
            return True

        def client_gone() -> bool:
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        response.watch(write_event, client_gone)
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True


def make_handler(emulator: Emulator, verbose: bool) -> type:
    return type("BoundRequestHandler", (RequestHandler,),
                {"emulator": emulator, "verbose": verbose})


def write_port_file(path: str, port: int) -> None:
    """Write the port atomically: a temporary file renamed over the target."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".k8s-emulator-port-")
    with os.fdopen(handle, "w") as port_file:
        port_file.write(f"{port}\n")
    os.replace(temporary, path)


def loopback_host(text: str) -> str:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--host must be an IPv4 loopback "
                                         f"address such as 127.0.0.1, not {text!r}")
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(f"--host must be a loopback address "
                                         f"(127.0.0.0/8), not {text}")
    return text


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Kubernetes API emulator for tests (not a real API server).")
    parser.add_argument("--port", type=int, required=True,
                        help="TCP port to listen on; 0 picks a free port")
    parser.add_argument("--host", type=loopback_host, default="127.0.0.1",
                        help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port-file",
                        help="file that receives the chosen port once listening")
    parser.add_argument("--seed", help="JSON file of objects to create at start, "
                        "in the format of POST /_emulator/seed")
    parser.add_argument("--rollout-step", type=float, default=0.2,
                        help="seconds between simulated pod updates (default 0.2)")
    parser.add_argument("--nodes", type=int, default=3,
                        help="node count that DaemonSets run on (default 3)")
    parser.add_argument("--user", default=DEFAULT_USER,
                        help="user named in 403 messages")
    parser.add_argument("--verbose", action="store_true",
                        help="log each request line (method, path, status) to stderr")
    arguments = parser.parse_args(argv)
    if arguments.rollout_step <= 0:
        parser.error("--rollout-step must be greater than 0")
    if arguments.nodes < 0:
        parser.error("--nodes must not be negative")
    return arguments


def run_rollout_clock(emulator: Emulator, stop: threading.Event) -> None:
    """Advance simulated rollouts so watchers see status changes on time."""
    interval = max(0.01, min(0.05, emulator.rollout_step / 4))
    while not stop.wait(interval):
        with emulator.lock:
            emulator.advance_rollouts()


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    emulator = Emulator(arguments.rollout_step, arguments.nodes, arguments.user)
    if arguments.seed:
        try:
            with open(arguments.seed, encoding="utf-8") as seed_file:
                emulator.seed(json.load(seed_file))
        except (OSError, json.JSONDecodeError, ControlError) as error:
            sys.stderr.write(f"k8s-emulator: cannot load seed file "
                             f"{arguments.seed}: {error}\n")
            return 2
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((arguments.host, arguments.port),
                                 make_handler(emulator, arguments.verbose))
    server.daemon_threads = True
    port = server.server_address[1]
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    clock = threading.Thread(target=run_rollout_clock, args=(emulator, stop),
                             name="rollout-clock", daemon=True)
    serving.start()
    clock.start()
    if arguments.port_file:
        write_port_file(arguments.port_file, port)
    sys.stderr.write(f"listening on http://{arguments.host}:{port}\n")
    sys.stderr.flush()
    while not stop.wait(0.5):
        pass
    sys.stderr.write("k8s-emulator: stopping\n")
    emulator.close()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
