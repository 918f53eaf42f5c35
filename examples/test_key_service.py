"""Tests for the example key service in key_service.py.

Every test talks to the service running as a subprocess on 127.0.0.1 with
port 0. The .env parser is also tested directly. Run from the repository
root with:

    python3 -m unittest examples/test_key_service.py -v
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().with_name("key_service.py")
sys.path.insert(0, str(SCRIPT.parent))

import key_service  # noqa: E402  (imported from this directory)

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
SECRET_PATTERN = re.compile(r"sk_live_[A-Za-z0-9]{40}")
KEY_ID_PATTERN = re.compile(r"key_[0-9a-f]{16}")
TIMESTAMP_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
START_TIMEOUT_SECONDS = 10
KEY_FIELDS = {
    "id",
    "name",
    "prefix",
    "status",
    "scopes",
    "rate_limit_per_minute",
    "monthly_quota",
    "ip_allowlist",
    "expires_at",
    "metadata",
    "created_at",
    "last_used_at",
    "usage_this_month",
}


class Reply:
    """A response read in full: status, headers and body."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)

    def error_code(self) -> str:
        return self.json()["error"]["code"]


class ServiceProcess:
    """The key service running as a subprocess, with stderr in a file."""

    def __init__(
        self,
        directory: str,
        *arguments: str,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.port_file = self.directory / f"port-{secrets.token_hex(4)}"
        self.log_file = self.directory / f"stderr-{secrets.token_hex(4)}.log"
        if environment is None:
            environment = dict(os.environ, KEYSERVICE_ADMIN_TOKEN=ADMIN_TOKEN)
        command = [
            sys.executable,
            str(SCRIPT),
            "--port",
            "0",
            "--port-file",
            str(self.port_file),
            *arguments,
        ]
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=environment,
                cwd=directory,
            )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int | None:
        """Return the port once written, or None if the process exits."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return None
            if self.port_file.exists():
                return int(self.port_file.read_text())
            time.sleep(0.02)
        self.process.kill()
        raise AssertionError(f"service did not start; stderr:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> Reply:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = (
                body if isinstance(body, bytes) else json.dumps(body).encode()
            )
            all_headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout
        )
        try:
            connection.request(method, path, body=data, headers=all_headers)
            return Reply(connection.getresponse())
        finally:
            connection.close()

    def admin(
        self, method: str, path: str, body: Any = None, **options: Any
    ) -> Reply:
        return self.request(method, path, body, token=ADMIN_TOKEN, **options)

    def create_key(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "test-key", "scopes": ["models:read", "chat:write"]}
        body.update(fields)
        reply = self.admin("POST", "/v1/keys", body)
        assert reply.status == 201, reply.body
        return reply.json()

    def metrics(self) -> str:
        return self.request("GET", "/metrics").body.decode()

    def stop(self, signal_number: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def counter_value(metrics: str, **labels: str) -> float:
    """Return the keyservice_requests_total sample with exactly these
    labels, or 0 when there is none."""
    expected = ",".join(f'{name}="{value}"' for name, value in labels.items())
    for line in metrics.splitlines():
        if line.startswith(f"keyservice_requests_total{{{expected}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class ServiceTestCase(unittest.TestCase):
    """Gives each test class a temporary directory and one shared service."""

    service_arguments: tuple[str, ...] = ()
    service: ServiceProcess

    @classmethod
    def setUpClass(cls) -> None:
        cls.temporary = tempfile.TemporaryDirectory()
        cls.directory = cls.temporary.name
        cls.service = ServiceProcess(cls.directory, *cls.service_arguments)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.service.stop()
        cls.temporary.cleanup()

    def start_service(self, *arguments: str, **options: Any) -> ServiceProcess:
        """Start an extra service that is stopped when the test ends."""
        service = ServiceProcess(self.directory, *arguments, **options)
        self.addCleanup(service.stop)
        return service


class StartupTests(ServiceTestCase):
    def test_listening_line_names_port(self) -> None:
        port = self.service.port
        self.assertIn(
            f"listening on http://127.0.0.1:{port}\n", self.service.log()
        )

    def test_port_file_has_only_port(self) -> None:
        text = self.service.port_file.read_text()
        self.assertEqual(text, f"{self.service.port}\n")

    def test_missing_admin_token_fails(self) -> None:
        environment = dict(os.environ)
        environment.pop("KEYSERVICE_ADMIN_TOKEN", None)
        service = ServiceProcess(self.directory, environment=environment)
        self.assertIsNone(service.port)
        self.assertNotEqual(service.process.wait(timeout=10), 0)
        self.assertIn("KEYSERVICE_ADMIN_TOKEN is not set", service.log())

    def test_empty_admin_token_fails(self) -> None:
        environment = dict(os.environ, KEYSERVICE_ADMIN_TOKEN="")
        service = ServiceProcess(self.directory, environment=environment)
        self.assertIsNone(service.port)
        self.assertIn("KEYSERVICE_ADMIN_TOKEN is not set", service.log())

    def test_admin_token_env_option(self) -> None:
        environment = dict(os.environ, OTHER_TOKEN="other-token")
        environment.pop("KEYSERVICE_ADMIN_TOKEN", None)
        service = self.start_service(
            "--admin-token-env", "OTHER_TOKEN", environment=environment
        )
        self.assertIsNotNone(service.port)
        reply = service.request("GET", "/v1/keys", token="other-token")
        self.assertEqual(reply.status, 200)

        missing = ServiceProcess(
            self.directory, "--admin-token-env", "UNSET_TOKEN_VARIABLE"
        )
        self.assertIsNone(missing.port)
        self.assertIn("UNSET_TOKEN_VARIABLE is not set", missing.log())

    def test_sigterm_stops_cleanly(self) -> None:
        service = ServiceProcess(self.directory)
        self.assertEqual(service.stop(signal.SIGTERM), 0)
        self.assertIn("received SIGTERM", service.log())
        self.assertTrue(service.log().rstrip().endswith("stopped"))

    def test_sigint_stops_cleanly(self) -> None:
        service = ServiceProcess(self.directory)
        self.assertEqual(service.stop(signal.SIGINT), 0)
        self.assertIn("received SIGINT", service.log())

    def test_sigterm_during_fault_delay(self) -> None:
        service = ServiceProcess(self.directory)
        fault = {"operation": "list", "mode": "timeout", "count": 1}
        service.admin("POST", "/_control/faults", fault)
        with self.assertRaises(socket.timeout):
            service.admin("GET", "/v1/keys", timeout=0.5)
        started = time.monotonic()
        self.assertEqual(service.stop(), 0)
        self.assertLess(time.monotonic() - started, 5)

    def test_invalid_state_file_fails(self) -> None:
        state_file = Path(self.directory) / "broken-state.json"
        state_file.write_text("{not json")
        service = ServiceProcess(
            self.directory, "--state-file", str(state_file)
        )
        self.assertIsNone(service.port)
        self.assertIn("state file", service.log())
        self.assertIn("is invalid", service.log())

    def test_invalid_host_rejected(self) -> None:
        service = ServiceProcess(self.directory, "--host", "localhost")
        self.assertIsNone(service.port)
        self.assertIn("--host must be an IP address", service.log())

    def test_consumer_options_go_together(self) -> None:
        service = ServiceProcess(self.directory, "--consumer-var", "X")
        self.assertIsNone(service.port)
        self.assertIn("go together", service.log())


class AdminApiTests(ServiceTestCase):
    def test_admin_call_without_token(self) -> None:
        reply = self.service.request("GET", "/v1/keys")
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.error_code(), "invalid_admin_token")
        self.assertIsInstance(reply.json()["error"]["message"], str)
        self.assertEqual(reply.headers["WWW-Authenticate"], "Bearer")

    def test_admin_call_with_wrong_token(self) -> None:
        for token in ("wrong", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]):
            reply = self.service.request("GET", "/v1/keys", token=token)
            self.assertEqual(reply.status, 401, token)

    def test_admin_call_with_api_key(self) -> None:
        secret = self.service.create_key()["secret"]
        reply = self.service.request("GET", "/v1/keys", token=secret)
        self.assertEqual(reply.status, 401)

    def test_every_admin_route_needs_token(self) -> None:
        key_id = self.service.create_key()["id"]
        routes = [
            ("POST", "/v1/keys"),
            ("GET", "/v1/keys"),
            ("GET", f"/v1/keys/{key_id}"),
            ("PATCH", f"/v1/keys/{key_id}"),
            ("DELETE", f"/v1/keys/{key_id}"),
            ("POST", f"/v1/keys/{key_id}/disable"),
            ("POST", f"/v1/keys/{key_id}/enable"),
            ("POST", "/_control/errors"),
            ("POST", "/_control/faults"),
            ("POST", "/_control/reset-faults"),
        ]
        for method, path in routes:
            reply = self.service.request(method, path, {})
            self.assertEqual(reply.status, 401, f"{method} {path}")
        self.assertEqual(
            self.service.admin("GET", f"/v1/keys/{key_id}").status, 200
        )

    def test_create_returns_key_and_secret(self) -> None:
        body = {
            "name": "billing",
            "scopes": ["models:read"],
            "rate_limit_per_minute": 60,
            "monthly_quota": 1000,
            "ip_allowlist": ["127.0.0.1/32", "10.0.0.0/8"],
            "expires_at": "2030-01-01T00:00:00+01:00",
            "metadata": {"team": "billing"},
        }
        reply = self.service.admin("POST", "/v1/keys", body)
        self.assertEqual(reply.status, 201)
        self.assertNotIn("Idempotent-Replayed", reply.headers)
        key = reply.json()
        self.assertEqual(set(key), KEY_FIELDS | {"secret"})
        self.assertRegex(key["secret"], SECRET_PATTERN)
        self.assertRegex(key["id"], KEY_ID_PATTERN)
        self.assertEqual(key["prefix"], key["secret"][:12])
        self.assertEqual(key["status"], "active")
        self.assertEqual(key["scopes"], ["models:read"])
        self.assertEqual(key["rate_limit_per_minute"], 60)
        self.assertEqual(key["monthly_quota"], 1000)
        self.assertEqual(key["ip_allowlist"], ["127.0.0.1/32", "10.0.0.0/8"])
        self.assertEqual(key["expires_at"], "2029-12-31T23:00:00Z")
        self.assertEqual(key["metadata"], {"team": "billing"})
        self.assertRegex(key["created_at"], TIMESTAMP_PATTERN)
        self.assertIsNone(key["last_used_at"])
        self.assertEqual(key["usage_this_month"], 0)

    def test_create_defaults(self) -> None:
        key = self.service.create_key(name="defaults", scopes=None)
        self.assertEqual(key["scopes"], [])
        self.assertIsNone(key["rate_limit_per_minute"])
        self.assertIsNone(key["monthly_quota"])
        self.assertEqual(key["ip_allowlist"], [])
        self.assertIsNone(key["expires_at"])
        self.assertEqual(key["metadata"], {})

    def test_secrets_are_unique(self) -> None:
        first = self.service.create_key()
        second = self.service.create_key()
        self.assertNotEqual(first["secret"], second["secret"])
        self.assertNotEqual(first["id"], second["id"])

    def test_get_and_list_hide_secret(self) -> None:
        created = self.service.create_key(name="hidden-secret")
        fetched = self.service.admin("GET", f"/v1/keys/{created['id']}").json()
        self.assertEqual(set(fetched), KEY_FIELDS)
        self.assertEqual(fetched["prefix"], created["prefix"])
        listing = self.service.admin("GET", "/v1/keys")
        self.assertNotIn(created["secret"].encode(), listing.body)
        for key in listing.json()["data"]:
            self.assertEqual(set(key), KEY_FIELDS)

    def test_create_validation_names_field(self) -> None:
        cases = [
            ({"scopes": []}, "name"),
            ({"name": ""}, "name"),
            ({"name": 5}, "name"),
            ({"name": "x", "scopes": "models:read"}, "scopes"),
            ({"name": "x", "scopes": ["ok", 3]}, "scopes[1]"),
            ({"name": "x", "scopes": ["a", "a"]}, "scopes[1]"),
            ({"name": "x", "scopes": ["has space"]}, "scopes[0]"),
            (
                {"name": "x", "rate_limit_per_minute": 0},
                "rate_limit_per_minute",
            ),
            (
                {"name": "x", "rate_limit_per_minute": True},
                "rate_limit_per_minute",
            ),
            (
                {"name": "x", "rate_limit_per_minute": 1.5},
                "rate_limit_per_minute",
            ),
            ({"name": "x", "monthly_quota": -1}, "monthly_quota"),
            ({"name": "x", "monthly_quota": "10"}, "monthly_quota"),
            ({"name": "x", "ip_allowlist": "127.0.0.1/32"}, "ip_allowlist"),
            ({"name": "x", "ip_allowlist": ["not-an-ip"]}, "ip_allowlist[0]"),
            ({"name": "x", "ip_allowlist": ["10.0.0.1/8"]}, "ip_allowlist[0]"),
            ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
            ({"name": "x", "expires_at": "2030-01-01"}, "expires_at"),
            ({"name": "x", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
            ({"name": "x", "expires_at": 1893456000}, "expires_at"),
            ({"name": "x", "metadata": ["a"]}, "metadata"),
            ({"name": "x", "metadata": {"team": 1}}, "metadata.team"),
            ({"name": "x", "secret": "sk_live_x"}, "secret"),
            ({"name": "x", "status": "disabled"}, "status"),
        ]
        for body, field in cases:
            with self.subTest(body=body):
                reply = self.service.admin("POST", "/v1/keys", body)
                self.assertEqual(reply.status, 400)
                error = reply.json()["error"]
                self.assertEqual(error["code"], "invalid_field")
                self.assertEqual(error["param"], field)
                self.assertIn(f"'{field}'", error["message"])

    def test_create_rejects_invalid_json(self) -> None:
        for body in (b"{not json", b"[1, 2]", b'"text"'):
            with self.subTest(body=body):
                reply = self.service.admin("POST", "/v1/keys", body)
                self.assertEqual(reply.status, 400)
                self.assertEqual(reply.error_code(), "invalid_json")

    def test_oversized_body_rejected(self) -> None:
        # Only the headers are sent, because the service responds with 413 and
        # closes the connection without reading a body over the limit.
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.service.port, timeout=10
        )
        self.addCleanup(connection.close)
        connection.putrequest("POST", "/v1/keys")
        connection.putheader("Authorization", f"Bearer {ADMIN_TOKEN}")
        connection.putheader("Content-Length", str(1024 * 1024 + 1))
        connection.endheaders()
        response = connection.getresponse()
        self.assertEqual(response.status, 413)
        self.assertEqual(response.headers["Connection"], "close")
        error = json.loads(response.read())["error"]
        self.assertEqual(error["code"], "body_too_large")

    def test_idempotent_create_replays(self) -> None:
        headers = {"Idempotency-Key": "replay-" + secrets.token_hex(4)}
        body = {"name": "replayed", "scopes": ["models:read"]}
        first = self.service.admin("POST", "/v1/keys", body, headers=headers)
        self.assertEqual(first.status, 201)
        self.assertNotIn("Idempotent-Replayed", first.headers)

        # Same body with its keys in another order still counts as the same.
        reordered = {"scopes": ["models:read"], "name": "replayed"}
        second = self.service.admin(
            "POST", "/v1/keys", reordered, headers=headers
        )
        self.assertEqual(second.status, 201)
        self.assertEqual(second.headers["Idempotent-Replayed"], "true")
        self.assertEqual(second.json()["id"], first.json()["id"])
        self.assertEqual(second.json()["secret"], first.json()["secret"])

        listing = self.service.admin("GET", "/v1/keys?name=replayed").json()
        self.assertEqual(len(listing["data"]), 1)

    def test_idempotency_key_reused_with_other_body(self) -> None:
        headers = {"Idempotency-Key": "reuse-" + secrets.token_hex(4)}
        first = self.service.admin(
            "POST", "/v1/keys", {"name": "a"}, headers=headers
        )
        self.assertEqual(first.status, 201)
        second = self.service.admin(
            "POST", "/v1/keys", {"name": "b"}, headers=headers
        )
        self.assertEqual(second.status, 409)
        self.assertEqual(second.error_code(), "idempotency_key_reused")

    def test_idempotent_replay_after_delete(self) -> None:
        headers = {"Idempotency-Key": "deleted-" + secrets.token_hex(4)}
        first = self.service.admin(
            "POST", "/v1/keys", {"name": "d"}, headers=headers
        )
        key_id = first.json()["id"]
        self.service.admin("DELETE", f"/v1/keys/{key_id}")
        again = self.service.admin(
            "POST", "/v1/keys", {"name": "d"}, headers=headers
        )
        self.assertEqual(again.status, 201)
        self.assertEqual(again.json()["id"], key_id)

    def test_distinct_idempotency_keys_create_two(self) -> None:
        body = {"name": "distinct-" + secrets.token_hex(4)}
        for suffix in ("one", "two"):
            headers = {"Idempotency-Key": body["name"] + suffix}
            self.service.admin("POST", "/v1/keys", body, headers=headers)
        listing = self.service.admin("GET", f"/v1/keys?name={body['name']}")
        self.assertEqual(len(listing.json()["data"]), 2)

    def test_invalid_idempotency_key_rejected(self) -> None:
        for value in ("x" * 256, "has space"):
            with self.subTest(value=value):
                reply = self.service.admin(
                    "POST",
                    "/v1/keys",
                    {"name": "x"},
                    headers={"Idempotency-Key": value},
                )
                self.assertEqual(reply.status, 400)
                self.assertEqual(
                    reply.json()["error"]["param"], "Idempotency-Key"
                )

    def test_list_filters(self) -> None:
        tag = secrets.token_hex(4)
        first = self.service.create_key(
            name=f"f-{tag}", metadata={"env": "prod"}
        )
        second = self.service.create_key(
            name=f"f-{tag}", metadata={"env": "dev"}
        )
        self.service.admin("POST", f"/v1/keys/{second['id']}/disable")

        def ids(query: str) -> list[str]:
            reply = self.service.admin("GET", f"/v1/keys?name=f-{tag}{query}")
            self.assertEqual(reply.status, 200)
            return [key["id"] for key in reply.json()["data"]]

        self.assertEqual(ids(""), [first["id"], second["id"]])
        self.assertEqual(ids("&status=active"), [first["id"]])
        self.assertEqual(ids("&status=disabled"), [second["id"]])
        self.assertEqual(ids("&metadata.env=dev"), [second["id"]])
        self.assertEqual(ids("&metadata.env=test"), [])
        self.assertEqual(ids("&metadata.missing=x"), [])

    def test_list_rejects_bad_filters(self) -> None:
        for query, param in (
            ("status=expired", "status"),
            ("colour=blue", "colour"),
            ("name=a&name=b", "name"),
        ):
            with self.subTest(query=query):
                reply = self.service.admin("GET", f"/v1/keys?{query}")
                self.assertEqual(reply.status, 400)
                self.assertEqual(reply.json()["error"]["param"], param)

    def test_patch_changes_fields(self) -> None:
        key = self.service.create_key(metadata={"a": "1"})
        changes = {
            "name": "renamed",
            "scopes": ["chat:write"],
            "rate_limit_per_minute": 5,
            "monthly_quota": 10,
            "ip_allowlist": ["192.168.0.0/16"],
            "expires_at": "2031-06-01T12:00:00Z",
            "metadata": {"b": "2"},
        }
        reply = self.service.admin("PATCH", f"/v1/keys/{key['id']}", changes)
        self.assertEqual(reply.status, 200)
        updated = reply.json()
        for name, value in changes.items():
            self.assertEqual(updated[name], value, name)
        self.assertNotIn("secret", updated)

        fetched = self.service.admin("GET", f"/v1/keys/{key['id']}").json()
        self.assertEqual(fetched, updated)

    def test_patch_clears_nullable_fields(self) -> None:
        key = self.service.create_key(
            rate_limit_per_minute=5, expires_at="2031-01-01T00:00:00Z"
        )
        changes = {
            "rate_limit_per_minute": None,
            "expires_at": None,
            "ip_allowlist": None,
        }
        updated = self.service.admin(
            "PATCH", f"/v1/keys/{key['id']}", changes
        ).json()
        self.assertIsNone(updated["rate_limit_per_minute"])
        self.assertIsNone(updated["expires_at"])
        self.assertEqual(updated["ip_allowlist"], [])
        self.assertEqual(updated["scopes"], key["scopes"])

    def test_patch_validation(self) -> None:
        key_id = self.service.create_key()["id"]
        for body, param in (
            ({"status": "disabled"}, "status"),
            ({"name": ""}, "name"),
            ({"monthly_quota": 0}, "monthly_quota"),
            ({"id": "key_0000000000000000"}, "id"),
        ):
            with self.subTest(body=body):
                reply = self.service.admin("PATCH", f"/v1/keys/{key_id}", body)
                self.assertEqual(reply.status, 400)
                self.assertEqual(reply.json()["error"]["param"], param)

    def test_disable_and_enable(self) -> None:
        key_id = self.service.create_key()["id"]
        for action, status in (
            ("disable", "disabled"),
            ("disable", "disabled"),
            ("enable", "active"),
            ("enable", "active"),
        ):
            reply = self.service.admin("POST", f"/v1/keys/{key_id}/{action}")
            self.assertEqual(reply.status, 200)
            self.assertEqual(reply.json()["status"], status)
            fetched = self.service.admin("GET", f"/v1/keys/{key_id}").json()
            self.assertEqual(fetched["status"], status)

    def test_delete_then_not_found(self) -> None:
        key_id = self.service.create_key()["id"]
        reply = self.service.admin("DELETE", f"/v1/keys/{key_id}")
        self.assertEqual(reply.status, 204)
        self.assertEqual(reply.body, b"")
        for method, path in (
            ("GET", f"/v1/keys/{key_id}"),
            ("DELETE", f"/v1/keys/{key_id}"),
            ("PATCH", f"/v1/keys/{key_id}"),
            ("POST", f"/v1/keys/{key_id}/disable"),
            ("POST", f"/v1/keys/{key_id}/enable"),
        ):
            reply = self.service.admin(method, path, {})
            self.assertEqual(reply.status, 404, f"{method} {path}")
            self.assertEqual(reply.error_code(), "key_not_found")

    def test_unknown_route_and_method(self) -> None:
        self.assertEqual(self.service.admin("GET", "/v2/keys").status, 404)
        reply = self.service.admin("PUT", "/v1/keys")
        self.assertEqual(reply.status, 501)
        reply = self.service.admin("DELETE", "/v1/keys")
        self.assertEqual(reply.status, 405)
        self.assertEqual(reply.headers["Allow"], "POST, GET")


class ProtectedApiTests(ServiceTestCase):
    def test_models_with_valid_key(self) -> None:
        secret = self.service.create_key()["secret"]
        reply = self.service.request("GET", "/v1/models", token=secret)
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json()["object"], "list")
        self.assertGreater(len(reply.json()["data"]), 0)

    def test_chat_completion_with_valid_key(self) -> None:
        secret = self.service.create_key()["secret"]
        body = {"model": "example-large", "messages": []}
        reply = self.service.request(
            "POST", "/v1/chat/completions", body, token=secret
        )
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json()["model"], "example-large")
        self.assertEqual(reply.json()["object"], "chat.completion")

    def test_missing_or_unknown_key(self) -> None:
        for token in (None, "sk_live_" + "a" * 40, ADMIN_TOKEN):
            with self.subTest(token=token and token[:8]):
                reply = self.service.request("GET", "/v1/models", token=token)
                self.assertEqual(reply.status, 401)
                self.assertEqual(reply.error_code(), "invalid_api_key")
                self.assertEqual(reply.headers["WWW-Authenticate"], "Bearer")

    def test_disabled_key_rejected(self) -> None:
        key = self.service.create_key()
        self.service.admin("POST", f"/v1/keys/{key['id']}/disable")
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.error_code(), "invalid_api_key")

        self.service.admin("POST", f"/v1/keys/{key['id']}/enable")
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 200)

    def test_deleted_key_rejected(self) -> None:
        key = self.service.create_key()
        self.service.admin("DELETE", f"/v1/keys/{key['id']}")
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 401)

    def test_expired_key_rejected(self) -> None:
        key = self.service.create_key(expires_at="2001-01-01T00:00:00Z")
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.error_code(), "invalid_api_key")

        self.service.admin(
            "PATCH",
            f"/v1/keys/{key['id']}",
            {"expires_at": "2099-01-01T00:00:00Z"},
        )
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 200)

    def test_missing_scope_rejected(self) -> None:
        key = self.service.create_key(scopes=["models:read"])
        reply = self.service.request(
            "POST", "/v1/chat/completions", {}, token=key["secret"]
        )
        self.assertEqual(reply.status, 403)
        self.assertEqual(reply.error_code(), "insufficient_scope")

        other = self.service.create_key(scopes=["chat:write"])
        reply = self.service.request(
            "GET", "/v1/models", token=other["secret"]
        )
        self.assertEqual(reply.status, 403)
        self.assertEqual(reply.error_code(), "insufficient_scope")

    def test_ip_allowlist(self) -> None:
        outside = self.service.create_key(ip_allowlist=["10.0.0.0/8"])
        reply = self.service.request(
            "GET", "/v1/models", token=outside["secret"]
        )
        self.assertEqual(reply.status, 403)
        self.assertEqual(reply.error_code(), "ip_not_allowed")

        inside = self.service.create_key(
            ip_allowlist=["10.0.0.0/8", "127.0.0.1/32"]
        )
        reply = self.service.request(
            "GET", "/v1/models", token=inside["secret"]
        )
        self.assertEqual(reply.status, 200)

    def test_rate_limit_per_minute(self) -> None:
        secret = self.service.create_key(rate_limit_per_minute=2)["secret"]
        for _ in range(2):
            reply = self.service.request("GET", "/v1/models", token=secret)
            self.assertEqual(reply.status, 200)
        reply = self.service.request("GET", "/v1/models", token=secret)
        self.assertEqual(reply.status, 429)
        self.assertEqual(reply.error_code(), "rate_limited")
        retry_after = int(reply.headers["Retry-After"])
        self.assertGreaterEqual(retry_after, 1)
        self.assertLessEqual(retry_after, 60)

    def test_rate_limit_is_per_key(self) -> None:
        limited = self.service.create_key(rate_limit_per_minute=1)["secret"]
        other = self.service.create_key(rate_limit_per_minute=1)["secret"]
        self.service.request("GET", "/v1/models", token=limited)
        reply = self.service.request("GET", "/v1/models", token=other)
        self.assertEqual(reply.status, 200)

    def test_monthly_quota(self) -> None:
        key = self.service.create_key(monthly_quota=2)
        for _ in range(2):
            reply = self.service.request(
                "GET", "/v1/models", token=key["secret"]
            )
            self.assertEqual(reply.status, 200)
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 429)
        self.assertEqual(reply.error_code(), "quota_exceeded")

        raised = {"monthly_quota": 3}
        self.service.admin("PATCH", f"/v1/keys/{key['id']}", raised)
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 200)

    def test_usage_and_last_used(self) -> None:
        key = self.service.create_key(scopes=["models:read"])
        self.service.request("GET", "/v1/models", token=key["secret"])
        self.service.request("GET", "/v1/models", token=key["secret"])
        # A rejected call is not counted as usage.
        self.service.request(
            "POST", "/v1/chat/completions", {}, token=key["secret"]
        )
        fetched = self.service.admin("GET", f"/v1/keys/{key['id']}").json()
        self.assertEqual(fetched["usage_this_month"], 2)
        self.assertRegex(fetched["last_used_at"], TIMESTAMP_PATTERN)


class PropagationDelayTests(ServiceTestCase):
    service_arguments = (
        "--propagation-delay",
        "1.5",
        "--bootstrap-key-file",
        "app.env",
    )

    def test_new_key_rejected_until_propagated(self) -> None:
        key = self.service.create_key()
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.error_code(), "invalid_api_key")

        time.sleep(1.6)
        reply = self.service.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 200)

    def test_bootstrap_key_usable_at_once(self) -> None:
        env_file = Path(self.directory) / "app.env"
        secret = key_service.read_env_variable(
            str(env_file), "GATEWAY_API_KEY"
        )
        reply = self.service.request("GET", "/v1/models", token=secret)
        self.assertEqual(reply.status, 200)


class MetricsTests(ServiceTestCase):
    def test_metrics_need_no_auth(self) -> None:
        reply = self.service.request("GET", "/metrics")
        self.assertEqual(reply.status, 200)
        self.assertTrue(reply.headers["Content-Type"].startswith("text/plain"))
        self.assertIn("\nkeyservice_up 1\n", reply.body.decode())

    def test_request_counter_labels(self) -> None:
        key = self.service.create_key(scopes=["models:read"])
        self.service.request("GET", "/v1/models", token=key["secret"])
        self.service.request("GET", "/v1/models", token=key["secret"])
        self.service.request(
            "POST", "/v1/chat/completions", {}, token=key["secret"]
        )
        before_unknown = counter_value(
            self.service.metrics(),
            endpoint="/v1/models",
            status="401",
            key_id="unknown",
        )
        self.service.request("GET", "/v1/models", token="sk_live_unknown")

        metrics = self.service.metrics()
        self.assertIn("# TYPE keyservice_requests_total counter", metrics)
        self.assertEqual(
            counter_value(
                metrics, endpoint="/v1/models", status="200", key_id=key["id"]
            ),
            2,
        )
        self.assertEqual(
            counter_value(
                metrics,
                endpoint="/v1/chat/completions",
                status="403",
                key_id=key["id"],
            ),
            1,
        )
        self.assertEqual(
            counter_value(
                metrics, endpoint="/v1/models", status="401", key_id="unknown"
            ),
            before_unknown + 1,
        )

    def test_disabled_key_counted_with_id(self) -> None:
        key = self.service.create_key()
        self.service.admin("POST", f"/v1/keys/{key['id']}/disable")
        self.service.request("GET", "/v1/models", token=key["secret"])
        metrics = self.service.metrics()
        value = counter_value(
            metrics, endpoint="/v1/models", status="401", key_id=key["id"]
        )
        self.assertEqual(value, 1)

    def test_admin_calls_not_counted(self) -> None:
        key = self.service.create_key()
        self.assertNotIn("/v1/keys", self.service.metrics())
        self.assertNotIn(key["id"], self.service.metrics())

    def test_keys_gauge_by_status(self) -> None:
        service = self.start_service()
        first = service.create_key()
        service.create_key()
        service.admin("POST", f"/v1/keys/{first['id']}/disable")
        metrics = service.metrics()
        self.assertIn("# TYPE keyservice_keys gauge", metrics)
        self.assertIn('keyservice_keys{status="active"} 1\n', metrics)
        self.assertIn('keyservice_keys{status="disabled"} 1\n', metrics)


class StateFileTests(ServiceTestCase):
    def test_state_survives_restart(self) -> None:
        state_file = Path(self.directory) / "restart-state.json"
        first = self.start_service("--state-file", str(state_file))
        key = first.create_key(name="kept", metadata={"a": "b"})
        first.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(first.stop(), 0)

        second = self.start_service("--state-file", str(state_file))
        fetched = second.admin("GET", f"/v1/keys/{key['id']}").json()
        self.assertEqual(fetched["name"], "kept")
        self.assertEqual(fetched["metadata"], {"a": "b"})
        self.assertEqual(fetched["usage_this_month"], 1)
        reply = second.request("GET", "/v1/models", token=key["secret"])
        self.assertEqual(reply.status, 200)

    def test_state_file_holds_hash_only(self) -> None:
        state_file = Path(self.directory) / "hash-state.json"
        service = self.start_service("--state-file", str(state_file))
        key = service.create_key()

        mode = stat.S_IMODE(state_file.stat().st_mode)
        self.assertEqual(mode, 0o600)
        text = state_file.read_text()
        self.assertNotIn(key["secret"], text)
        self.assertNotIn(key["secret"][12:], text)
        digest = hashlib.sha256(key["secret"].encode()).hexdigest()
        self.assertIn(digest, text)

    def test_state_written_before_response(self) -> None:
        state_file = Path(self.directory) / "sync-state.json"
        service = self.start_service("--state-file", str(state_file))
        key = service.create_key()
        self.assertIn(key["id"], state_file.read_text())
        service.admin("DELETE", f"/v1/keys/{key['id']}")
        self.assertNotIn(key["id"], state_file.read_text())

    def test_bootstrap_key_file(self) -> None:
        state_file = Path(self.directory) / "bootstrap-state.json"
        env_file = Path(self.directory) / "bootstrap.env"
        service = self.start_service(
            "--state-file",
            str(state_file),
            "--bootstrap-key-file",
            str(env_file),
        )
        self.assertEqual(stat.S_IMODE(env_file.stat().st_mode), 0o600)
        match = re.fullmatch(r"GATEWAY_API_KEY=(\S+)\n", env_file.read_text())
        self.assertIsNotNone(match)
        secret = match.group(1)
        self.assertRegex(secret, SECRET_PATTERN)
        self.assertNotIn(secret, service.log())

        keys = service.admin("GET", "/v1/keys").json()["data"]
        self.assertEqual(len(keys), 1)
        self.assertEqual(keys[0]["scopes"], ["models:read", "chat:write"])
        expected = f"bootstrap key {keys[0]['id']} created"
        self.assertIn(expected, service.log())
        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
        ):
            reply = service.request(method, path, {}, token=secret)
            self.assertEqual(reply.status, 200, path)
        service.stop()

        # With the state file present, a restart creates no second key.
        restarted = self.start_service(
            "--state-file",
            str(state_file),
            "--bootstrap-key-file",
            str(env_file),
        )
        keys = restarted.admin("GET", "/v1/keys").json()["data"]
        self.assertEqual(len(keys), 1)
        self.assertEqual(env_file.read_text(), f"GATEWAY_API_KEY={secret}\n")


class EnvFileParserTests(unittest.TestCase):
    def test_parse_env_line_forms(self) -> None:
        cases = [
            ("NAME=value", ("NAME", "value")),
            ("export NAME=value", ("NAME", "value")),
            ("NAME='single quoted'", ("NAME", "single quoted")),
            ('NAME="double quoted"', ("NAME", "double quoted")),
            ('NAME="with \\" quote"', ("NAME", 'with " quote')),
            ("NAME = spaced  ", ("NAME", "spaced")),
            ("NAME=value # comment", ("NAME", "value")),
            ("NAME='keeps # hash'", ("NAME", "keeps # hash")),
            ("NAME=", ("NAME", "")),
            ("# comment", None),
            ("", None),
            ("no assignment", None),
        ]
        for line, expected in cases:
            with self.subTest(line=line):
                self.assertEqual(key_service.parse_env_line(line), expected)

    def test_read_env_variable(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "app.env"
            path.write_text("OTHER=1\nexport KEY='first'\nKEY=\"second\"\n")
            self.assertEqual(
                key_service.read_env_variable(str(path), "KEY"), "second"
            )
            self.assertIsNone(
                key_service.read_env_variable(str(path), "MISSING")
            )
            missing = str(Path(directory) / "absent.env")
            self.assertIsNone(key_service.read_env_variable(missing, "KEY"))


class ConsumerTests(ServiceTestCase):
    def start_consumer(self, env_file: Path) -> ServiceProcess:
        return self.start_service(
            "--consumer-env-file",
            str(env_file),
            "--consumer-var",
            "APP_KEY",
            "--consumer-rate",
            "40",
        )

    def wait_for_counter(
        self, service: ServiceProcess, status: str, key_id: str
    ) -> bool:
        def counted() -> bool:
            metrics = service.metrics()
            return (
                counter_value(
                    metrics,
                    endpoint="/v1/models",
                    status=status,
                    key_id=key_id,
                )
                > 0
            )

        return wait_until(counted)

    def test_consumer_follows_env_file(self) -> None:
        env_file = Path(self.directory) / "consumer.env"
        service = self.start_consumer(env_file)
        self.assertTrue(self.wait_for_counter(service, "401", "unknown"))
        expected = "consumer: status 401 with no key"
        self.assertTrue(wait_until(lambda: expected in service.log()))

        key = service.create_key()
        env_file.write_text(f'export APP_KEY="{key["secret"]}"\n')
        self.assertTrue(self.wait_for_counter(service, "200", key["id"]))

        service.admin("POST", f"/v1/keys/{key['id']}/disable")
        self.assertTrue(self.wait_for_counter(service, "401", key["id"]))

        other = service.create_key()
        env_file.write_text(f"APP_KEY='{other['secret']}'\n")
        self.assertTrue(self.wait_for_counter(service, "200", other["id"]))

    def test_consumer_without_variable(self) -> None:
        env_file = Path(self.directory) / "other-variable.env"
        env_file.write_text("SOMETHING_ELSE=x\n")
        service = self.start_consumer(env_file)
        self.assertTrue(self.wait_for_counter(service, "401", "unknown"))

    def test_consumer_rate(self) -> None:
        env_file = Path(self.directory) / "rate.env"
        service = self.start_consumer(env_file)
        self.assertTrue(self.wait_for_counter(service, "401", "unknown"))
        start = counter_value(
            service.metrics(),
            endpoint="/v1/models",
            status="401",
            key_id="unknown",
        )
        time.sleep(1.0)
        end = counter_value(
            service.metrics(),
            endpoint="/v1/models",
            status="401",
            key_id="unknown",
        )
        # The consumer makes 40 calls a second. The wide bounds allow for a
        # slow machine.
        self.assertGreater(end - start, 20)
        self.assertLess(end - start, 60)


class FaultControlTests(ServiceTestCase):
    def setUp(self) -> None:
        reply = self.service.admin("POST", "/_control/reset-faults")
        self.assertEqual(reply.status, 204)

    def add_fault(self, operation: str, mode: str, count: int = 1) -> None:
        body = {"operation": operation, "mode": mode, "count": count}
        reply = self.service.admin("POST", "/_control/faults", body)
        self.assertEqual(reply.status, 200, reply.body)

    def key_names(self, name: str) -> list[dict[str, Any]]:
        return self.service.admin("GET", f"/v1/keys?name={name}").json()[
            "data"
        ]

    def test_error_rate_all_and_none(self) -> None:
        secret = self.service.create_key()["secret"]
        reply = self.service.admin("POST", "/_control/errors", {"rate": 1.0})
        self.assertEqual(reply.status, 200)
        for _ in range(5):
            reply = self.service.request("GET", "/v1/models", token=secret)
            self.assertEqual(reply.status, 500)
            self.assertEqual(reply.error_code(), "internal_error")

        self.service.admin("POST", "/_control/errors", {"rate": 0})
        reply = self.service.request("GET", "/v1/models", token=secret)
        self.assertEqual(reply.status, 200)

    def test_error_rate_fraction(self) -> None:
        secret = self.service.create_key()["secret"]
        self.service.admin("POST", "/_control/errors", {"rate": 0.5})
        statuses = [
            self.service.request("GET", "/v1/models", token=secret).status
            for _ in range(200)
        ]
        failures = statuses.count(500)
        # Binomial(200, 0.5) falls outside 60..140 with negligible chance.
        self.assertGreater(failures, 60)
        self.assertLess(failures, 140)
        self.assertEqual(statuses.count(200), 200 - failures)

    def test_error_rate_counted_in_metrics(self) -> None:
        key = self.service.create_key()
        self.service.admin("POST", "/_control/errors", {"rate": 1.0})
        self.service.request("GET", "/v1/models", token=key["secret"])
        value = counter_value(
            self.service.metrics(),
            endpoint="/v1/models",
            status="500",
            key_id=key["id"],
        )
        self.assertEqual(value, 1)

    def test_error_rate_validation(self) -> None:
        for body in (
            {"rate": 1.5},
            {"rate": -0.1},
            {"rate": "0.5"},
            {"rate": True},
            {},
        ):
            with self.subTest(body=body):
                reply = self.service.admin("POST", "/_control/errors", body)
                self.assertEqual(reply.status, 400)
                self.assertEqual(reply.json()["error"]["param"], "rate")

    def test_fault_validation(self) -> None:
        cases = [
            ({"operation": "update", "mode": "html"}, "operation"),
            ({"operation": "create", "mode": "slow"}, "mode"),
            ({"operation": "get", "mode": "missing_secret"}, "mode"),
            ({"operation": "delete", "mode": "missing_id"}, "mode"),
            ({"operation": "get", "mode": "html", "count": 0}, "count"),
            ({"operation": "get", "mode": "html", "count": "2"}, "count"),
        ]
        for body, param in cases:
            with self.subTest(body=body):
                reply = self.service.admin("POST", "/_control/faults", body)
                self.assertEqual(reply.status, 400)
                self.assertEqual(reply.json()["error"]["param"], param)

    def test_status500_skips_create(self) -> None:
        name = "fault-500-" + secrets.token_hex(4)
        self.add_fault("create", "status500")
        reply = self.service.admin("POST", "/v1/keys", {"name": name})
        self.assertEqual(reply.status, 500)
        self.assertEqual(reply.error_code(), "internal_error")
        self.assertEqual(self.key_names(name), [])
        self.assertIn(
            "POST /v1/keys 500 key_id=- fault=status500", self.service.log()
        )

        reply = self.service.admin("POST", "/v1/keys", {"name": name})
        self.assertEqual(reply.status, 201)

    def test_status500_skips_delete(self) -> None:
        key_id = self.service.create_key()["id"]
        self.add_fault("delete", "status500")
        self.assertEqual(
            self.service.admin("DELETE", f"/v1/keys/{key_id}").status, 500
        )
        self.assertEqual(
            self.service.admin("GET", f"/v1/keys/{key_id}").status, 200
        )

    def test_html_error_page(self) -> None:
        key_id = self.service.create_key()["id"]
        self.add_fault("get", "html")
        reply = self.service.admin("GET", f"/v1/keys/{key_id}")
        self.assertEqual(reply.status, 502)
        self.assertTrue(reply.headers["Content-Type"].startswith("text/html"))
        self.assertIn(b"<html>", reply.body)

    def test_html_skips_disable(self) -> None:
        key_id = self.service.create_key()["id"]
        self.add_fault("disable", "html")
        reply = self.service.admin("POST", f"/v1/keys/{key_id}/disable")
        self.assertEqual(reply.status, 502)
        fetched = self.service.admin("GET", f"/v1/keys/{key_id}").json()
        self.assertEqual(fetched["status"], "active")

    def test_missing_id_still_creates(self) -> None:
        name = "fault-id-" + secrets.token_hex(4)
        headers = {"Idempotency-Key": name}
        self.add_fault("create", "missing_id")
        reply = self.service.admin(
            "POST", "/v1/keys", {"name": name}, headers=headers
        )
        self.assertEqual(reply.status, 201)
        self.assertNotIn("id", reply.json())
        self.assertRegex(reply.json()["secret"], SECRET_PATTERN)
        self.assertEqual(len(self.key_names(name)), 1)

        # A retry with the same Idempotency-Key gets the full response.
        retry = self.service.admin(
            "POST", "/v1/keys", {"name": name}, headers=headers
        )
        self.assertEqual(retry.json()["id"], self.key_names(name)[0]["id"])
        self.assertEqual(retry.json()["secret"], reply.json()["secret"])

    def test_missing_id_in_list(self) -> None:
        self.service.create_key()
        self.add_fault("list", "missing_id")
        keys = self.service.admin("GET", "/v1/keys").json()["data"]
        self.assertGreater(len(keys), 0)
        for key in keys:
            self.assertNotIn("id", key)
        keys = self.service.admin("GET", "/v1/keys").json()["data"]
        self.assertIn("id", keys[0])

    def test_missing_secret_still_creates(self) -> None:
        name = "fault-secret-" + secrets.token_hex(4)
        self.add_fault("create", "missing_secret")
        reply = self.service.admin("POST", "/v1/keys", {"name": name})
        self.assertEqual(reply.status, 201)
        self.assertNotIn("secret", reply.json())
        self.assertEqual(self.key_names(name)[0]["id"], reply.json()["id"])

    def test_timeout_delays_response(self) -> None:
        name = "fault-timeout-" + secrets.token_hex(4)
        self.add_fault("create", "timeout")
        started = time.monotonic()
        with self.assertRaises(socket.timeout):
            self.service.admin("POST", "/v1/keys", {"name": name}, timeout=1)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)

        # The service still serves other calls, and the key exists.
        self.assertEqual(len(self.key_names(name)), 1)

    def test_reset_closes_connection(self) -> None:
        key_id = self.service.create_key()["id"]
        self.add_fault("disable", "reset")
        with self.assertRaises(ConnectionResetError) as raised:
            self.service.admin("POST", f"/v1/keys/{key_id}/disable")
        # A TCP reset, not an orderly close that http.client reports as
        # RemoteDisconnected.
        self.assertEqual(raised.exception.errno, errno.ECONNRESET)
        fetched = self.service.admin("GET", f"/v1/keys/{key_id}").json()
        self.assertEqual(fetched["status"], "disabled")

    def test_fault_count(self) -> None:
        key_id = self.service.create_key()["id"]
        self.add_fault("enable", "status500", count=2)
        statuses = [
            self.service.admin("POST", f"/v1/keys/{key_id}/enable").status
            for _ in range(3)
        ]
        self.assertEqual(statuses, [500, 500, 200])

    def test_faults_used_in_order(self) -> None:
        key_id = self.service.create_key()["id"]
        self.add_fault("get", "html")
        self.add_fault("get", "status500")
        statuses = [
            self.service.admin("GET", f"/v1/keys/{key_id}").status
            for _ in range(3)
        ]
        self.assertEqual(statuses, [502, 500, 200])

    def test_fault_only_hits_its_operation(self) -> None:
        key_id = self.service.create_key()["id"]
        self.add_fault("delete", "status500")
        self.assertEqual(
            self.service.admin("GET", f"/v1/keys/{key_id}").status, 200
        )
        self.assertEqual(self.service.admin("GET", "/v1/keys").status, 200)
        self.assertEqual(
            self.service.admin("DELETE", f"/v1/keys/{key_id}").status, 500
        )

    def test_unauthenticated_call_keeps_fault(self) -> None:
        self.add_fault("list", "status500")
        self.assertEqual(self.service.request("GET", "/v1/keys").status, 401)
        self.assertEqual(self.service.admin("GET", "/v1/keys").status, 500)

    def test_reset_faults_clears_all(self) -> None:
        secret = self.service.create_key()["secret"]
        self.add_fault("list", "status500", count=5)
        self.service.admin("POST", "/_control/errors", {"rate": 1.0})
        reply = self.service.admin("POST", "/_control/reset-faults")
        self.assertEqual(reply.status, 204)
        self.assertEqual(self.service.admin("GET", "/v1/keys").status, 200)
        reply = self.service.request("GET", "/v1/models", token=secret)
        self.assertEqual(reply.status, 200)


class RequestLogTests(ServiceTestCase):
    def test_log_has_no_secrets(self) -> None:
        headers = {"Idempotency-Key": "log-check"}
        reply = self.service.admin(
            "POST", "/v1/keys", {"name": "logged"}, headers=headers
        )
        secret = reply.json()["secret"]
        self.service.request("GET", "/v1/models", token=secret)
        self.service.request("POST", "/v1/chat/completions", {}, token=secret)
        self.service.request("GET", "/v1/models", token="sk_live_" + "b" * 40)
        self.service.admin("GET", "/v1/keys?metadata.x=y")

        log = self.service.log()
        self.assertNotIn(secret, log)
        self.assertNotIn(secret[12:], log)
        self.assertNotIn(ADMIN_TOKEN, log)
        self.assertNotIn("sk_live_bbbb", log)
        self.assertNotIn("Bearer", log)
        self.assertNotIn("Authorization", log)

    def test_one_line_per_request(self) -> None:
        service = self.start_service()
        key = service.create_key()
        service.request("GET", "/v1/models", token=key["secret"])
        service.request("GET", "/v1/models")
        service.admin("GET", f"/v1/keys/{key['id']}")
        service.request("GET", "/metrics")
        service.admin("PUT", "/v1/keys")

        log = service.log()
        after_start = log[log.index("listening on") :].splitlines()[1:]
        self.assertEqual(len(after_start), 6, "\n".join(after_start))
        request_lines = after_start
        self.assertIn(
            f"POST /v1/keys 201 key_id={key['id']}", request_lines[0]
        )
        self.assertIn(
            f"GET /v1/models 200 key_id={key['id']}", request_lines[1]
        )
        self.assertIn("GET /v1/models 401 key_id=unknown", request_lines[2])
        self.assertIn("PUT /v1/keys 501", request_lines[5])

    def test_client_reset_logged_briefly(self) -> None:
        service = self.start_service()
        connection = http.client.HTTPConnection("127.0.0.1", service.port)
        connection.request("GET", "/metrics")
        connection.getresponse().read()

        # With the response read in full, the service waits for the next
        # request on this keep-alive connection. A zero linger time makes
        # close() send a TCP reset.
        linger = struct.pack("ii", 1, 0)
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        connection.close()

        self.assertTrue(wait_until(lambda: "closed:" in service.log()))
        self.assertIn("connection from 127.0.0.1 closed:", service.log())
        self.assertNotIn("Traceback", service.log())


if __name__ == "__main__":
    unittest.main()
