"""Tests for the Kubernetes API emulator in k8s_emulator.py.

Each test class starts the emulator as a subprocess on a free port and talks
to it over HTTP with urllib and http.client only. Run with:

    python3 -m unittest tests/support/test_k8s_emulator.py -v
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "k8s_emulator.py")
sys.path.insert(0, HERE)
import k8s_emulator  # noqa: E402 (imported from this file's folder)
ROLLOUT_STEP = 0.05
USER = "system:serviceaccount:keywheel:rotator"
# No proxy from the environment may ever see these requests.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EmulatorProcess:
    """One emulator subprocess and a small HTTP client for it."""

    def __init__(self, *extra_args: str):
        self.directory = tempfile.TemporaryDirectory()
        self.port_file = os.path.join(self.directory.name, "port")
        self.stderr_path = os.path.join(self.directory.name, "stderr")
        self.stderr = open(self.stderr_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, EMULATOR, "--port", "0", "--port-file", self.port_file,
             "--rollout-step", str(ROLLOUT_STEP), *extra_args],
            stderr=self.stderr, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.port_file):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("emulator did not start: " + self.read_stderr())
            time.sleep(0.02)
        with open(self.port_file) as port_file:
            self.port = int(port_file.read().strip())
        self.base = f"http://127.0.0.1:{self.port}"

    def read_stderr(self) -> str:
        self.stderr.flush()
        with open(self.stderr_path) as stderr:
            return stderr.read()

    def request(self, method: str, path: str, body=None,
                content_type: str = "application/json",
                headers: dict | None = None, raw: bytes | None = None):
        """Send a request; return (status, headers, parsed JSON or text)."""
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with OPENER.open(request, timeout=10) as response:
                return response.status, response.headers, parse(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.headers, parse(error.read())

    def control(self, method: str, action: str, body=None):
        status, _, answer = self.request(method, f"/_emulator/{action}", body)
        return status, answer

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=10)
        self.stderr.close()
        self.directory.cleanup()
        return code


def parse(payload: bytes):
    text = payload.decode()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def status_body(code: int, reason: str, message: str, details=None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


SECRETS = "/api/v1/namespaces/{ns}/secrets"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
STATEFULSETS = "/apis/apps/v1/namespaces/{ns}/statefulsets"
DAEMONSETS = "/apis/apps/v1/namespaces/{ns}/daemonsets"


class EmulatorTestCase(unittest.TestCase):
    emulator: EmulatorProcess

    @classmethod
    def setUpClass(cls):
        cls.emulator = EmulatorProcess()

    @classmethod
    def tearDownClass(cls):
        cls.emulator.stop()

    def setUp(self):
        status, _ = self.emulator.control("POST", "reset")
        self.assertEqual(status, 200)

    def call(self, method, path, body=None, **kwargs):
        return self.emulator.request(method, path, body, **kwargs)

    def seed(self, *objects):
        status, answer = self.emulator.control("POST", "seed", list(objects))
        self.assertEqual(status, 201, answer)
        return answer

    def create_secret(self, name="api", namespace="default", data=None, **extra):
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, **extra.pop("metadata", {})},
                "data": data if data is not None else {"token": b64("old")}, **extra}
        status, _, created = self.call("POST", SECRETS.format(ns=namespace), body)
        self.assertEqual(status, 201, created)
        return created

    def get(self, path):
        status, _, body = self.call("GET", path)
        self.assertEqual(status, 200, body)
        return body

    def wait_for(self, path, predicate, timeout=10.0):
        """Poll path until predicate(object) holds; return the objects seen."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.get(path)
            seen.append(obj)
            if predicate(obj):
                return seen
            time.sleep(ROLLOUT_STEP / 3)
        self.fail(f"condition not reached on {path}; last status: "
                  f"{json.dumps(seen[-1].get('status'))}")


# --------------------------------------------------------------------------


class ProcessTest(unittest.TestCase):
    def test_port_file_and_banner(self):
        emulator = EmulatorProcess()
        try:
            self.assertIn(f"listening on http://127.0.0.1:{emulator.port}",
                          emulator.read_stderr())
            status, _, body = emulator.request("GET", "/healthz")
            self.assertEqual(status, 200)
            self.assertEqual(body, "ok")
        finally:
            self.assertEqual(emulator.stop(), 0)

    def test_sigterm_stops_with_open_watch(self):
        emulator = EmulatorProcess()
        connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=5)
        connection.request("GET", SECRETS.format(ns="default") + "?watch=true")
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        started = time.monotonic()
        self.assertEqual(emulator.stop(), 0)
        self.assertLess(time.monotonic() - started, 5)
        connection.close()

    def test_sigint_stops(self):
        emulator = EmulatorProcess()
        emulator.process.send_signal(signal.SIGINT)
        self.assertEqual(emulator.process.wait(timeout=10), 0)
        emulator.stop()

    def test_rejects_non_loopback_host(self):
        result = subprocess.run(
            [sys.executable, EMULATOR, "--port", "0", "--host", "0.0.0.0"],
            capture_output=True, text=True, timeout=10)
        self.assertEqual(result.returncode, 2)
        self.assertIn("loopback", result.stderr)

    def test_seed_file_at_start(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as seed:
            json.dump([
                {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": "prod", "labels": {"team": "pay"}}},
                {"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "db", "namespace": "prod"},
                 "stringData": {"password": "hunter2"}},
            ], seed)
        emulator = EmulatorProcess("--seed", seed.name)
        try:
            status, _, secret = emulator.request("GET", SECRETS.format(ns="prod") + "/db")
            self.assertEqual(status, 200)
            self.assertEqual(secret["data"], {"password": b64("hunter2")})
            self.assertNotIn("hunter2", emulator.read_stderr())
            _, _, namespace = emulator.request("GET", "/api/v1/namespaces/prod")
            self.assertEqual(namespace["metadata"]["labels"]["team"], "pay")
        finally:
            emulator.stop()
            os.unlink(seed.name)

    def test_bad_seed_file_exits(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as seed:
            json.dump([{"kind": "ConfigMap", "metadata": {"name": "x"}}], seed)
        try:
            result = subprocess.run(
                [sys.executable, EMULATOR, "--port", "0", "--seed", seed.name],
                capture_output=True, text=True, timeout=10)
        finally:
            os.unlink(seed.name)
        self.assertEqual(result.returncode, 2)
        self.assertIn("unsupported kind", result.stderr)


class DiscoveryTest(EmulatorTestCase):
    def test_version(self):
        version = self.get("/version")
        self.assertEqual(version["major"], "1")
        self.assertTrue(version["gitVersion"].startswith("v1."))

    def test_health_endpoints(self):
        for path in ("/healthz", "/livez", "/readyz"):
            status, headers, body = self.call("GET", path)
            self.assertEqual((status, body), (200, "ok"), path)
            self.assertTrue(headers["Content-Type"].startswith("text/plain"))

    def test_api_and_apis(self):
        self.assertEqual(self.get("/api")["versions"], ["v1"])
        groups = self.get("/apis")
        self.assertEqual(groups["kind"], "APIGroupList")
        self.assertEqual(groups["groups"][0]["name"], "apps")
        self.assertEqual(self.get("/apis/apps")["preferredVersion"]["version"], "v1")

    def test_resource_lists(self):
        core = {r["name"]: r for r in self.get("/api/v1")["resources"]}
        self.assertEqual(core["secrets"]["kind"], "Secret")
        self.assertTrue(core["secrets"]["namespaced"])
        self.assertFalse(core["namespaces"]["namespaced"])
        apps = {r["name"]: r for r in self.get("/apis/apps/v1")["resources"]}
        self.assertEqual(set(apps), {"deployments", "statefulsets", "daemonsets"})
        self.assertIn("patch", apps["deployments"]["verbs"])

    def test_aggregated_discovery(self):
        accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                  "application/json")
        status, headers, body = self.call("GET", "/apis", headers={"Accept": accept})
        self.assertEqual(status, 200)
        self.assertIn("as=APIGroupDiscoveryList", headers["Content-Type"])
        resources = body["items"][0]["versions"][0]["resources"]
        self.assertIn("deployments", [r["resource"] for r in resources])

    def test_unknown_paths(self):
        status, _, body = self.call("GET", "/nothing-here")
        self.assertEqual((status, body), (404, "404 page not found\n"))
        status, _, body = self.call("GET", "/api/v1/namespaces/default/configmaps")
        self.assertEqual(status, 404)
        self.assertEqual(body, status_body(
            404, "NotFound", "the server could not find the requested resource", {}))


class NamespaceTest(EmulatorTestCase):
    def test_default_namespaces_exist(self):
        names = [n["metadata"]["name"] for n in self.get("/api/v1/namespaces")["items"]]
        self.assertEqual(names, ["default", "kube-node-lease", "kube-public",
                                 "kube-system"])

    def test_create_and_get(self):
        status, _, created = self.call("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team-a", "labels": {"env": "prod"}}})
        self.assertEqual(status, 201)
        self.assertEqual(created["metadata"]["labels"],
                         {"env": "prod", "kubernetes.io/metadata.name": "team-a"})
        self.assertEqual(created["status"], {"phase": "Active"})
        fetched = self.get("/api/v1/namespaces/team-a")
        self.assertEqual(fetched["metadata"]["uid"], created["metadata"]["uid"])
        self.assertNotIn("generation", fetched["metadata"])

    def test_create_existing(self):
        status, _, body = self.call("POST", "/api/v1/namespaces",
                                    {"metadata": {"name": "default"}})
        self.assertEqual(status, 409)
        self.assertEqual(body, status_body(
            409, "AlreadyExists", 'namespaces "default" already exists',
            {"name": "default", "kind": "namespaces"}))

    def test_get_missing(self):
        status, _, body = self.call("GET", "/api/v1/namespaces/nope")
        self.assertEqual(status, 404)
        self.assertEqual(body["message"], 'namespaces "nope" not found')

    def test_delete_removes_contents(self):
        self.seed({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "s", "namespace": "doomed"}})
        status, _, body = self.call("DELETE", "/api/v1/namespaces/doomed")
        self.assertEqual(status, 200)
        self.assertEqual(body["status"], {"phase": "Terminating"})
        status, _, _ = self.call("GET", SECRETS.format(ns="doomed") + "/s")
        self.assertEqual(status, 404)
        status, _, _ = self.call("GET", "/api/v1/namespaces/doomed")
        self.assertEqual(status, 404)

    def test_invalid_name(self):
        status, _, body = self.call("POST", "/api/v1/namespaces",
                                    {"metadata": {"name": "Bad_Name"}})
        self.assertEqual(status, 422)
        self.assertEqual(body["reason"], "Invalid")
        self.assertEqual(body["details"]["causes"][0]["field"], "metadata.name")

    def test_label_selectors(self):
        self.seed(
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "a", "labels": {"env": "prod", "keywheel": "on"}}},
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "b", "labels": {"env": "dev", "keywheel": "on"}}},
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "c", "labels": {"env": "prod"}}},
        )
        cases = {
            "env=prod": ["a", "c"],
            "env==prod": ["a", "c"],
            "env!=prod": ["b", "default", "kube-node-lease", "kube-public",
                          "kube-system"],
            "keywheel": ["a", "b"],
            "!keywheel,env": ["c"],
            "env=prod,keywheel=on": ["a"],
            "env in (prod,dev),keywheel": ["a", "b"],
            "env notin (prod),env": ["b"],
            "env = prod , keywheel": ["a"],
        }
        for selector, expected in cases.items():
            query = urllib.parse.urlencode({"labelSelector": selector})
            items = self.get(f"/api/v1/namespaces?{query}")["items"]
            with self.subTest(selector=selector):
                self.assertEqual([i["metadata"]["name"] for i in items], expected)

    def test_invalid_label_selector(self):
        query = urllib.parse.urlencode({"labelSelector": "env=prod,,x"})
        status, _, body = self.call("GET", f"/api/v1/namespaces?{query}")
        self.assertEqual(status, 400)
        self.assertEqual(body["reason"], "BadRequest")


class SecretReadTest(EmulatorTestCase):
    def test_created_fields(self):
        created = self.create_secret()
        metadata = created["metadata"]
        self.assertEqual(created["kind"], "Secret")
        self.assertEqual(created["apiVersion"], "v1")
        self.assertEqual(created["type"], "Opaque")
        self.assertIsInstance(metadata["resourceVersion"], str)
        self.assertTrue(metadata["resourceVersion"].isdigit())
        self.assertEqual(len(metadata["uid"]), 36)
        self.assertRegex(metadata["creationTimestamp"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(metadata["namespace"], "default")
        self.assertNotIn("generation", metadata)
        self.assertEqual(self.get(SECRETS.format(ns="default") + "/api"), created)

    def test_get_missing(self):
        status, _, body = self.call("GET", SECRETS.format(ns="default") + "/nope")
        self.assertEqual(status, 404)
        self.assertEqual(body, status_body(404, "NotFound", 'secrets "nope" not found',
                                           {"name": "nope", "kind": "secrets"}))

    def test_global_resource_version(self):
        first = self.create_secret("one")
        second = self.create_secret("two")
        namespace = self.get("/api/v1/namespaces/default")
        self.assertGreater(int(second["metadata"]["resourceVersion"]),
                           int(first["metadata"]["resourceVersion"]))
        self.assertLess(int(namespace["metadata"]["resourceVersion"]),
                        int(first["metadata"]["resourceVersion"]))

    def test_list_with_selector(self):
        self.create_secret("a", metadata={"labels": {"keywheel": "managed"}})
        self.create_secret("b", metadata={"labels": {"keywheel": "other"}})
        self.create_secret("c")
        query = urllib.parse.urlencode({"labelSelector": "keywheel=managed"})
        listed = self.get(SECRETS.format(ns="default") + "?" + query)
        self.assertEqual(listed["kind"], "SecretList")
        self.assertEqual(listed["apiVersion"], "v1")
        self.assertTrue(listed["metadata"]["resourceVersion"].isdigit())
        self.assertEqual([i["metadata"]["name"] for i in listed["items"]], ["a"])
        self.assertNotIn("kind", listed["items"][0])
        query = urllib.parse.urlencode({"labelSelector": "keywheel"})
        listed = self.get(SECRETS.format(ns="default") + "?" + query)
        self.assertEqual([i["metadata"]["name"] for i in listed["items"]], ["a", "b"])

    def test_list_field_selector_and_all_namespaces(self):
        self.seed({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "x", "namespace": "other"}})
        self.create_secret("x")
        self.create_secret("y")
        listed = self.get("/api/v1/secrets?fieldSelector=metadata.name%3Dx")
        self.assertEqual([(i["metadata"]["namespace"], i["metadata"]["name"])
                          for i in listed["items"]], [("default", "x"), ("other", "x")])
        status, _, body = self.call("GET", "/api/v1/secrets?fieldSelector=spec.x%3D1")
        self.assertEqual(status, 400)

    def test_list_missing_namespace_is_empty(self):
        self.assertEqual(self.get(SECRETS.format(ns="ghost"))["items"], [])

    def test_list_pages(self):
        for name in ("a", "b", "c"):
            self.create_secret(name)
        first = self.get(SECRETS.format(ns="default") + "?limit=2")
        self.assertEqual([i["metadata"]["name"] for i in first["items"]], ["a", "b"])
        self.assertEqual(first["metadata"]["remainingItemCount"], 1)
        token = urllib.parse.quote(first["metadata"]["continue"])
        second = self.get(SECRETS.format(ns="default") + f"?limit=2&continue={token}")
        self.assertEqual([i["metadata"]["name"] for i in second["items"]], ["c"])
        self.assertNotIn("continue", second["metadata"])

    def test_metadata_only(self):
        self.create_secret()
        accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
        _, _, body = self.call("GET", SECRETS.format(ns="default") + "/api",
                               headers={"Accept": accept})
        self.assertEqual(body["kind"], "PartialObjectMetadata")
        self.assertNotIn("data", body)


class SecretWriteTest(EmulatorTestCase):
    def test_string_data_merged(self):
        created = self.create_secret(data={"a": b64("1"), "b": b64("2")},
                                     stringData={"b": "s3cr3t", "c": "3"})
        self.assertEqual(created["data"], {"a": b64("1"), "b": "czNjcjN0", "c": b64("3")})
        self.assertNotIn("stringData", created)
        self.assertNotIn("stringData", self.get(SECRETS.format(ns="default") + "/api"))

    def test_invalid_base64_on_create(self):
        status, _, body = self.call("POST", SECRETS.format(ns="default"), {
            "metadata": {"name": "bad"}, "data": {"k": "czNj!jN0"}})
        self.assertEqual(status, 400)
        self.assertEqual(body, status_body(
            400, "BadRequest", 'Secret in version "v1" cannot be handled as a Secret: '
            "illegal base64 data at input byte 4"))

    def test_base64_offsets(self):
        cases = {"abc": 0, "ab=c": 2, "a===": 1, "abcd=": 4, "czNjcjN0\n": None,
                 "YQ==": None, "YQ=": 3}
        for value, offset in cases.items():
            status, _, body = self.call("POST", SECRETS.format(ns="default"), {
                "metadata": {"generateName": "b64-"}, "data": {"k": value}})
            with self.subTest(value=value):
                if offset is None:
                    self.assertEqual(status, 201, body)
                else:
                    self.assertEqual(status, 400)
                    self.assertTrue(body["message"].endswith(f"input byte {offset}"),
                                    body["message"])

    def test_invalid_base64_on_patch(self):
        self.create_secret()
        status, _, body = self.call(
            "PATCH", SECRETS.format(ns="default") + "/api", {"data": {"k": "!!"}},
            content_type="application/merge-patch+json")
        self.assertEqual(status, 422)
        self.assertEqual(body["reason"], "Invalid")
        self.assertEqual(body["details"]["causes"][0]["field"], "patch")
        self.assertIn("illegal base64 data at input byte 0", body["message"])

    def test_invalid_key(self):
        status, _, body = self.call("POST", SECRETS.format(ns="default"), {
            "metadata": {"name": "bad"}, "data": {"bad/key": b64("x")}})
        self.assertEqual(status, 422)
        self.assertTrue(body["message"].startswith(
            'Secret "bad" is invalid: data[bad/key]: Invalid value: "bad/key": '
            "a valid config key must consist of"), body["message"])
        self.assertEqual(body["details"]["kind"], "Secret")
        self.assertEqual(body["details"]["causes"][0]["reason"], "FieldValueInvalid")

    def test_create_existing(self):
        self.create_secret()
        status, _, body = self.call("POST", SECRETS.format(ns="default"),
                                    {"metadata": {"name": "api"}})
        self.assertEqual(status, 409)
        self.assertEqual(body, status_body(
            409, "AlreadyExists", 'secrets "api" already exists',
            {"name": "api", "kind": "secrets"}))

    def test_create_in_missing_namespace(self):
        status, _, body = self.call("POST", SECRETS.format(ns="ghost"),
                                    {"metadata": {"name": "api"}})
        self.assertEqual(status, 404)
        self.assertEqual(body, status_body(
            404, "NotFound", 'namespaces "ghost" not found',
            {"name": "ghost", "kind": "namespaces"}))

    def test_create_with_resource_version(self):
        status, _, body = self.call("POST", SECRETS.format(ns="default"),
                                    {"metadata": {"name": "x", "resourceVersion": "5"}})
        self.assertEqual(status, 500)
        self.assertIn("resourceVersion should not be set", body["message"])

    def test_namespace_mismatch(self):
        status, _, body = self.call("POST", SECRETS.format(ns="default"), {
            "metadata": {"name": "x", "namespace": "other"}})
        self.assertEqual(status, 400)
        self.assertIn("does not match the namespace", body["message"])

    def test_replace_with_current_version(self):
        created = self.create_secret()
        created["data"]["token"] = b64("new")
        status, _, replaced = self.call("PUT", SECRETS.format(ns="default") + "/api",
                                        created)
        self.assertEqual(status, 200, replaced)
        self.assertEqual(replaced["data"]["token"], b64("new"))
        self.assertGreater(int(replaced["metadata"]["resourceVersion"]),
                           int(created["metadata"]["resourceVersion"]))
        self.assertEqual(replaced["metadata"]["uid"], created["metadata"]["uid"])

    def test_replace_with_stale_version(self):
        created = self.create_secret()
        stale = json.loads(json.dumps(created))
        created["data"]["token"] = b64("first")
        self.assertEqual(self.call("PUT", SECRETS.format(ns="default") + "/api",
                                   created)[0], 200)
        stale["data"]["token"] = b64("second")
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api", stale)
        self.assertEqual(status, 409)
        self.assertEqual(body, status_body(
            409, "Conflict",
            'Operation cannot be fulfilled on secrets "api": the object has been '
            "modified; please apply your changes to the latest version and try again",
            {"name": "api", "kind": "secrets"}))
        current = self.get(SECRETS.format(ns="default") + "/api")
        self.assertEqual(current["data"]["token"], b64("first"))

    def test_replace_without_version(self):
        self.create_secret()
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api"},
            "data": {"token": b64("forced")}})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["data"], {"token": b64("forced")})

    def test_replace_unchanged_keeps_version(self):
        created = self.create_secret()
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api",
                                    created)
        self.assertEqual(status, 200)
        self.assertEqual(body["metadata"]["resourceVersion"],
                         created["metadata"]["resourceVersion"])

    def test_replace_missing(self):
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/nope",
                                    {"metadata": {"name": "nope"}})
        self.assertEqual(status, 404)
        self.assertEqual(body["message"], 'secrets "nope" not found')

    def test_replace_name_mismatch(self):
        self.create_secret()
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api",
                                    {"metadata": {"name": "other"}})
        self.assertEqual(status, 400)
        self.assertEqual(body["message"], "the name of the object (other) does not "
                         "match the name on the URL (api)")

    def test_replace_wrong_uid(self):
        created = self.create_secret()
        created["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api", created)
        self.assertEqual(status, 409)
        self.assertIn("Precondition failed: UID in precondition", body["message"])

    def test_replace_bad_version_syntax(self):
        self.create_secret()
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api", {
            "metadata": {"name": "api", "resourceVersion": "abc"}})
        self.assertEqual(status, 422)

    def test_type_is_immutable(self):
        created = self.create_secret()
        created["type"] = "kubernetes.io/basic-auth"
        created["data"]["username"] = b64("u")
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api", created)
        self.assertEqual(status, 422)
        self.assertEqual(body["message"], 'Secret "api" is invalid: type: Invalid value: '
                         '"kubernetes.io/basic-auth": field is immutable')

    def test_immutable_secret(self):
        created = self.create_secret(immutable=True)
        created["data"]["token"] = b64("new")
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api", created)
        self.assertEqual(status, 422)
        self.assertIn("data: Forbidden: field is immutable when `immutable` is set",
                      body["message"])

    def test_tls_requires_keys(self):
        status, _, body = self.call("POST", SECRETS.format(ns="default"), {
            "metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {}})
        self.assertEqual(status, 422)
        self.assertEqual([c["field"] for c in body["details"]["causes"]],
                         ["data[tls.crt]", "data[tls.key]"])

    def test_size_limit(self):
        value = base64.b64encode(b"x" * (1024 * 1024)).decode()
        status, _, body = self.call("POST", SECRETS.format(ns="default"), {
            "metadata": {"name": "big"}, "data": {"k": value}})
        self.assertEqual(status, 422)
        self.assertEqual(body["message"], 'Secret "big" is invalid: data: Too long: '
                         "must have at most 1048576 bytes")
        self.assertEqual(body["details"]["causes"][0]["reason"], "FieldValueTooLong")

    def test_delete(self):
        created = self.create_secret()
        status, _, body = self.call("DELETE", SECRETS.format(ns="default") + "/api")
        self.assertEqual(status, 200)
        self.assertEqual(body, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Success",
                                "details": {"name": "api", "kind": "secrets",
                                            "uid": created["metadata"]["uid"]}})
        status, _, _ = self.call("GET", SECRETS.format(ns="default") + "/api")
        self.assertEqual(status, 404)
        status, _, body = self.call("DELETE", SECRETS.format(ns="default") + "/api")
        self.assertEqual(status, 404)

    def test_delete_with_stale_precondition(self):
        self.create_secret()
        status, _, body = self.call(
            "DELETE", SECRETS.format(ns="default") + "/api",
            {"kind": "DeleteOptions", "apiVersion": "v1",
             "preconditions": {"resourceVersion": "1"}})
        self.assertEqual(status, 409)
        self.assertEqual(body["reason"], "Conflict")
        self.assertIn("Precondition failed: ResourceVersion in precondition: 1",
                      body["message"])

    def test_dry_run(self):
        status, _, body = self.call("POST", SECRETS.format(ns="default") + "?dryRun=All",
                                    {"metadata": {"name": "dry"}})
        self.assertEqual(status, 201)
        status, _, _ = self.call("GET", SECRETS.format(ns="default") + "/dry")
        self.assertEqual(status, 404)

    def test_field_validation(self):
        body = {"metadata": {"name": "x"}, "extra": 1}
        status, headers, created = self.call("POST", SECRETS.format(ns="default"), body)
        self.assertEqual(status, 201)
        self.assertEqual(headers["Warning"], '299 - "unknown field \\"extra\\""')
        self.assertNotIn("extra", created)
        status, _, answer = self.call(
            "POST", SECRETS.format(ns="default") + "?fieldValidation=Strict",
            {"metadata": {"name": "y"}, "extra": 1})
        self.assertEqual(status, 400)
        self.assertIn('strict decoding error: unknown field "extra"', answer["message"])

    def test_json_only(self):
        status, _, body = self.call("POST", SECRETS.format(ns="default"),
                                    raw=b"metadata: {name: x}",
                                    content_type="application/yaml")
        self.assertEqual(status, 415)
        self.assertEqual(body["reason"], "UnsupportedMediaType")


class SecretPatchTest(EmulatorTestCase):
    PATH = SECRETS.format(ns="default") + "/api"

    def setUp(self):
        super().setUp()
        self.created = self.create_secret(
            data={"token": b64("old"), "other": b64("keep")},
            metadata={"labels": {"team": "pay"}, "annotations": {"note": "x"}})

    def patch(self, body, content_type):
        return self.call("PATCH", self.PATH, body, content_type=content_type)

    def test_merge_patch(self):
        status, _, body = self.patch({"data": {"token": b64("new"), "other": None}},
                                     "application/merge-patch+json")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["data"], {"token": b64("new")})
        self.assertEqual(body["metadata"]["labels"], {"team": "pay"})
        self.assertEqual(body["metadata"]["annotations"], {"note": "x"})
        self.assertGreater(int(body["metadata"]["resourceVersion"]),
                           int(self.created["metadata"]["resourceVersion"]))

    def test_strategic_merge_patch(self):
        status, _, body = self.patch({"data": {"token": b64("new")}},
                                     "application/strategic-merge-patch+json")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["data"], {"token": b64("new"), "other": b64("keep")})

    def test_string_data_in_patch(self):
        status, _, body = self.patch({"stringData": {"token": "plain"}},
                                     "application/merge-patch+json")
        self.assertEqual(status, 200)
        self.assertEqual(body["data"]["token"], b64("plain"))
        self.assertNotIn("stringData", body)

    def test_json_patch(self):
        operations = [
            {"op": "test", "path": "/data/token", "value": b64("old")},
            {"op": "replace", "path": "/data/token", "value": b64("new")},
            {"op": "add", "path": "/data/extra", "value": b64("e")},
            {"op": "remove", "path": "/data/other"},
            {"op": "add", "path": "/metadata/labels/a~1b", "value": "slash"},
        ]
        status, _, body = self.patch(operations, "application/json-patch+json")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["data"], {"token": b64("new"), "extra": b64("e")})
        self.assertEqual(body["metadata"]["labels"]["a/b"], "slash")

    def test_json_patch_failed_test(self):
        status, _, body = self.patch(
            [{"op": "test", "path": "/data/token", "value": b64("wrong")},
             {"op": "replace", "path": "/data/token", "value": b64("new")}],
            "application/json-patch+json")
        self.assertEqual(status, 422)
        self.assertEqual(body, status_body(
            422, "Invalid", "the server rejected our request due to an error in our "
            "request", {"causes": [{"reason": "UnexpectedServerResponse",
                                    "message": "testing value /data/token failed: "
                                               "test failed"}]}))
        self.assertEqual(self.get(self.PATH)["data"]["token"], b64("old"))

    def test_json_patch_missing_path(self):
        status, _, body = self.patch([{"op": "remove", "path": "/data/none"}],
                                     "application/json-patch+json")
        self.assertEqual(status, 422)
        status, _, body = self.patch([{"op": "replace", "path": "/data/none",
                                       "value": "eA=="}], "application/json-patch+json")
        self.assertEqual(status, 422)

    def test_json_patch_malformed(self):
        status, _, body = self.patch({"op": "add"}, "application/json-patch+json")
        self.assertEqual(status, 400)
        status, _, body = self.patch([{"op": "frobnicate", "path": "/x"}],
                                     "application/json-patch+json")
        self.assertEqual(status, 400)

    def test_patch_resource_version_precondition(self):
        status, _, body = self.patch(
            {"metadata": {"resourceVersion": "1"}, "data": {"token": b64("x")}},
            "application/merge-patch+json")
        self.assertEqual(status, 409)
        self.assertEqual(body["reason"], "Conflict")
        self.assertIn("the object has been modified", body["message"])
        current_version = self.created["metadata"]["resourceVersion"]
        status, _, body = self.patch(
            {"metadata": {"resourceVersion": current_version},
             "data": {"token": b64("x")}}, "application/merge-patch+json")
        self.assertEqual(status, 200)

    def test_apply_patch_unsupported(self):
        status, _, body = self.call("PATCH", self.PATH + "?fieldManager=kw",
                                    raw=b"{}", content_type="application/apply-patch+yaml")
        self.assertEqual(status, 415)
        self.assertEqual(body["reason"], "UnsupportedMediaType")
        self.assertIn("server-side apply", body["message"])

    def test_patch_unknown_type(self):
        status, _, _ = self.patch({}, "application/json")
        self.assertEqual(status, 415)

    def test_patch_missing(self):
        status, _, body = self.call("PATCH", SECRETS.format(ns="default") + "/nope",
                                    {}, content_type="application/merge-patch+json")
        self.assertEqual(status, 404)
        self.assertEqual(body["message"], 'secrets "nope" not found')

    def test_patch_renaming_rejected(self):
        status, _, body = self.patch({"metadata": {"name": "other"}},
                                     "application/merge-patch+json")
        self.assertEqual(status, 400)


DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "app", "image": "registry.test/web:1.0",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "registry.test/side:1.0"}]},
        },
    },
}


def restart_patch(stamp: str = "2025-01-01T00:00:00Z") -> dict:
    return {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": stamp}}}}}


def rollout_done(obj: dict) -> bool:
    status = obj.get("status", {})
    return (status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("updatedReplicas") == obj["spec"]["replicas"]
            and status.get("replicas") == obj["spec"]["replicas"]
            and status.get("availableReplicas") == obj["spec"]["replicas"])


class DeploymentTest(EmulatorTestCase):
    PATH = DEPLOYMENTS.format(ns="default") + "/web"

    def test_seeded_is_rolled_out(self):
        self.seed(DEPLOYMENT)
        deployment = self.get(self.PATH)
        self.assertEqual(deployment["metadata"]["generation"], 1)
        self.assertTrue(rollout_done(deployment), deployment["status"])
        self.assertEqual(deployment["status"]["readyReplicas"], 3)
        progressing = {c["type"]: c for c in deployment["status"]["conditions"]}
        self.assertEqual(progressing["Progressing"]["reason"], "NewReplicaSetAvailable")
        self.assertEqual(progressing["Available"]["status"], "True")

    def test_defaults(self):
        self.seed(DEPLOYMENT)
        spec = self.get(self.PATH)["spec"]
        self.assertEqual(spec["strategy"], {"type": "RollingUpdate", "rollingUpdate": {
            "maxUnavailable": "25%", "maxSurge": "25%"}})
        self.assertEqual(spec["progressDeadlineSeconds"], 600)
        self.assertEqual(spec["revisionHistoryLimit"], 10)
        container = spec["template"]["spec"]["containers"][0]
        self.assertEqual(container["imagePullPolicy"], "IfNotPresent")

    def test_create_rolls_out(self):
        status, _, created = self.call("POST", DEPLOYMENTS.format(ns="default"),
                                       DEPLOYMENT)
        self.assertEqual(status, 201, created)
        self.assertEqual(created["metadata"]["generation"], 1)
        self.assertNotIn("observedGeneration", created["status"])
        seen = self.wait_for(self.PATH, rollout_done)
        available = [obj["status"].get("availableReplicas", 0) for obj in seen]
        self.assertEqual(available, sorted(available))
        self.assertEqual(seen[-1]["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"], "1")

    def test_create_invalid(self):
        body = json.loads(json.dumps(DEPLOYMENT))
        body["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
        status, _, answer = self.call("POST", DEPLOYMENTS.format(ns="default"), body)
        self.assertEqual(status, 422)
        self.assertTrue(answer["message"].startswith('Deployment.apps "web" is invalid'))
        self.assertEqual(answer["details"]["group"], "apps")
        self.assertEqual(answer["details"]["kind"], "Deployment")

    def test_restart_rolls_out(self):
        self.seed(DEPLOYMENT)
        status, _, patched = self.call("PATCH", self.PATH, restart_patch(),
                                       content_type="application/strategic-merge-patch+json")
        self.assertEqual(status, 200, patched)
        self.assertEqual(patched["metadata"]["generation"], 2)
        self.assertEqual(patched["status"]["observedGeneration"], 1)
        seen = self.wait_for(self.PATH, rollout_done)
        updated = [obj["status"].get("updatedReplicas", 0) for obj in seen
                   if obj["status"].get("observedGeneration") == 2]
        self.assertEqual(updated, sorted(updated))
        self.assertIn(1, updated)
        self.assertIn(2, updated)
        final = seen[-1]
        self.assertEqual(final["status"]["readyReplicas"], 3)
        conditions = {c["type"]: c for c in final["status"]["conditions"]}
        self.assertEqual(conditions["Progressing"]["reason"], "NewReplicaSetAvailable")
        self.assertEqual(final["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"], "2")
        containers = final["spec"]["template"]["spec"]["containers"]
        self.assertEqual([c["name"] for c in containers], ["app", "sidecar"])

    def test_strategic_patch_merges_containers(self):
        self.seed(DEPLOYMENT)
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "registry.test/web:2.0",
             "env": [{"name": "B", "value": "changed"}, {"name": "C", "value": "3"}]}]}}}}
        status, _, body = self.call("PATCH", self.PATH, patch,
                                    content_type="application/strategic-merge-patch+json")
        self.assertEqual(status, 200, body)
        containers = body["spec"]["template"]["spec"]["containers"]
        self.assertEqual([c["name"] for c in containers], ["app", "sidecar"])
        self.assertEqual(containers[0]["image"], "registry.test/web:2.0")
        self.assertEqual(containers[0]["env"], [{"name": "A", "value": "1"},
                                                {"name": "B", "value": "changed"},
                                                {"name": "C", "value": "3"}])
        delete = {"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"}]}}}}
        status, _, body = self.call("PATCH", self.PATH, delete,
                                    content_type="application/strategic-merge-patch+json")
        self.assertEqual(status, 200, body)
        self.assertEqual([c["name"] for c in body["spec"]["template"]["spec"]["containers"]],
                         ["app"])

    def test_merge_patch_replaces_lists(self):
        self.seed(DEPLOYMENT)
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "registry.test/web:2.0"}]}}}}
        status, _, body = self.call("PATCH", self.PATH, patch,
                                    content_type="application/merge-patch+json")
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body["spec"]["template"]["spec"]["containers"]), 1)

    def test_metadata_change_keeps_generation(self):
        self.seed(DEPLOYMENT)
        status, _, body = self.call("PATCH", self.PATH,
                                    {"metadata": {"annotations": {"owner": "me"}}},
                                    content_type="application/merge-patch+json")
        self.assertEqual(status, 200)
        self.assertEqual(body["metadata"]["generation"], 1)

    def test_scale_bumps_generation(self):
        self.seed(DEPLOYMENT)
        status, _, body = self.call("PATCH", self.PATH, {"spec": {"replicas": 5}},
                                    content_type="application/merge-patch+json")
        self.assertEqual(status, 200)
        self.assertEqual(body["metadata"]["generation"], 2)
        self.wait_for(self.PATH, lambda d: rollout_done(d)
                      and d["status"]["replicas"] == 5)

    def test_client_status_ignored(self):
        self.seed(DEPLOYMENT)
        current = self.get(self.PATH)
        current["status"]["readyReplicas"] = 99
        status, _, body = self.call("PUT", self.PATH, current)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["status"]["readyReplicas"], 3)
        self.assertEqual(body["metadata"]["generation"], 1)

    def test_replace_with_stale_version(self):
        self.seed(DEPLOYMENT)
        stale = self.get(self.PATH)
        self.call("PATCH", self.PATH, restart_patch(),
                  content_type="application/strategic-merge-patch+json")
        status, _, body = self.call("PUT", self.PATH, stale)
        self.assertEqual(status, 409)
        self.assertEqual(body["message"], 'Operation cannot be fulfilled on '
                         'deployments.apps "web": the object has been modified; please '
                         "apply your changes to the latest version and try again")
        self.assertEqual(body["details"], {"name": "web", "group": "apps",
                                           "kind": "deployments"})

    def test_get_missing(self):
        status, _, body = self.call("GET", DEPLOYMENTS.format(ns="default") + "/nope")
        self.assertEqual(status, 404)
        self.assertEqual(body["message"], 'deployments.apps "nope" not found')

    def test_stall_hits_deadline(self):
        body = json.loads(json.dumps(DEPLOYMENT))
        body["spec"]["progressDeadlineSeconds"] = 1
        self.seed(body)
        status, _ = self.emulator.control("POST", "stall", {
            "namespace": "default", "kind": "Deployment", "name": "web"})
        self.assertEqual(status, 201)
        self.call("PATCH", self.PATH, restart_patch(),
                  content_type="application/strategic-merge-patch+json")

        def deadline_exceeded(obj):
            conditions = {c["type"]: c for c in obj["status"].get("conditions", [])}
            return conditions["Progressing"]["reason"] == "ProgressDeadlineExceeded"

        seen = self.wait_for(self.PATH, deadline_exceeded, timeout=5)
        final = seen[-1]
        self.assertEqual(final["status"]["observedGeneration"], 2)
        self.assertLess(final["status"]["updatedReplicas"], 3)
        progressing = [c for c in final["status"]["conditions"]
                       if c["type"] == "Progressing"][0]
        self.assertEqual(progressing["status"], "False")
        self.assertFalse(any(rollout_done(obj) for obj in seen))
        self.assertEqual(self.emulator.control("DELETE", "stall")[0], 200)
        self.wait_for(self.PATH, rollout_done)

    def test_stall_override_deadline(self):
        self.seed(DEPLOYMENT)
        self.emulator.control("POST", "stall", {
            "namespace": "default", "kind": "deployments", "name": "web",
            "progress_deadline_seconds": 0.3})
        self.call("PATCH", self.PATH, restart_patch(),
                  content_type="application/strategic-merge-patch+json")
        self.wait_for(self.PATH, lambda obj: any(
            c["reason"] == "ProgressDeadlineExceeded"
            for c in obj["status"]["conditions"]), timeout=5)


class StatefulSetAndDaemonSetTest(EmulatorTestCase):
    def workload(self, kind):
        body = json.loads(json.dumps(DEPLOYMENT))
        body["kind"] = kind
        body["metadata"]["name"] = "db"
        if kind == "DaemonSet":
            del body["spec"]["replicas"]
        return body

    def test_statefulset_rollout(self):
        self.seed(self.workload("StatefulSet"))
        path = STATEFULSETS.format(ns="default") + "/db"
        before = self.get(path)
        self.assertEqual(before["status"]["currentRevision"],
                         before["status"]["updateRevision"])
        self.assertEqual(before["spec"]["updateStrategy"],
                         {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        self.call("PATCH", path, restart_patch(),
                  content_type="application/strategic-merge-patch+json")

        def done(obj):
            status = obj["status"]
            return (status.get("observedGeneration") == 2
                    and status.get("currentRevision") == status.get("updateRevision")
                    and status.get("updatedReplicas") == 3
                    and status.get("readyReplicas") == 3)

        seen = self.wait_for(path, done)
        during = [obj["status"] for obj in seen
                  if obj["status"].get("observedGeneration") == 2 and not done(obj)]
        self.assertTrue(during)
        self.assertTrue(all(s["currentRevision"] != s["updateRevision"] for s in during))
        self.assertNotEqual(seen[-1]["status"]["updateRevision"],
                            before["status"]["updateRevision"])
        self.assertEqual(seen[-1]["status"]["availableReplicas"], 3)

    def test_daemonset_rollout(self):
        self.seed(self.workload("DaemonSet"))
        path = DAEMONSETS.format(ns="default") + "/db"
        before = self.get(path)["status"]
        self.assertEqual(before["desiredNumberScheduled"], 3)
        self.assertEqual(before["numberReady"], 3)
        self.call("PATCH", path, restart_patch(),
                  content_type="application/strategic-merge-patch+json")

        def done(obj):
            status = obj["status"]
            return (status.get("observedGeneration") == 2
                    and status.get("updatedNumberScheduled") == 3
                    and status.get("numberAvailable") == 3)

        seen = self.wait_for(path, done)
        updated = [obj["status"].get("updatedNumberScheduled", 0) for obj in seen
                   if obj["status"].get("observedGeneration") == 2]
        self.assertEqual(updated, sorted(updated))
        self.assertEqual(seen[-1]["status"]["numberReady"], 3)

    def test_statefulset_stall(self):
        self.seed(self.workload("StatefulSet"))
        path = STATEFULSETS.format(ns="default") + "/db"
        self.emulator.control("POST", "stall", {"namespace": "default",
                                                "kind": "statefulsets", "name": "db"})
        self.call("PATCH", path, restart_patch(),
                  content_type="application/strategic-merge-patch+json")
        time.sleep(ROLLOUT_STEP * 10)
        status = self.get(path)["status"]
        self.assertEqual(status["observedGeneration"], 2)
        self.assertLess(status["readyReplicas"], 3)
        self.assertNotEqual(status["currentRevision"], status["updateRevision"])


class ForbidTest(EmulatorTestCase):
    def test_forbid_update_and_patch(self):
        self.create_secret()
        status, _ = self.emulator.control("POST", "forbid", {
            "namespace": "default", "verbs": ["update", "patch"], "resource": "secrets"})
        self.assertEqual(status, 201)
        current = self.get(SECRETS.format(ns="default") + "/api")
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api", current)
        self.assertEqual(status, 403)
        self.assertEqual(body, status_body(
            403, "Forbidden",
            f'secrets "api" is forbidden: User "{USER}" cannot update resource '
            '"secrets" in API group "" in the namespace "default"',
            {"name": "api", "kind": "secrets"}))
        status, _, body = self.call("PATCH", SECRETS.format(ns="default") + "/api", {},
                                    content_type="application/merge-patch+json")
        self.assertEqual(status, 403)
        self.assertIn("cannot patch resource", body["message"])
        self.assertEqual(self.emulator.control("DELETE", "forbid")[0], 200)
        status, _, _ = self.call("PUT", SECRETS.format(ns="default") + "/api", current)
        self.assertEqual(status, 200)

    def test_forbid_every_verb(self):
        self.create_secret()
        self.emulator.control("POST", "forbid", {
            "namespace": "default", "verbs": ["*"], "resource": "secrets"})
        path = SECRETS.format(ns="default")
        cases = [
            ("GET", path + "/api", None, "get", 'secrets "api" is forbidden'),
            ("GET", path, None, "list", "secrets is forbidden"),
            ("POST", path, {"metadata": {"name": "n"}}, "create",
             "secrets is forbidden"),
            ("DELETE", path + "/api", None, "delete", 'secrets "api" is forbidden'),
        ]
        for method, url, body, verb, prefix in cases:
            status, _, answer = self.call(method, url, body)
            with self.subTest(verb=verb):
                self.assertEqual(status, 403)
                self.assertEqual(answer["message"], f'{prefix}: User "{USER}" cannot '
                                 f'{verb} resource "secrets" in API group "" in the '
                                 'namespace "default"')

    def test_forbid_other_namespace_unaffected(self):
        self.seed({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "x", "namespace": "other"}})
        self.emulator.control("POST", "forbid", {
            "namespace": "default", "verbs": ["get"], "resource": "secrets"})
        status, _, _ = self.call("GET", SECRETS.format(ns="other") + "/x")
        self.assertEqual(status, 200)

    def test_forbid_namespaces(self):
        self.emulator.control("POST", "forbid", {"verbs": ["get", "list"],
                                                 "resource": "namespaces"})
        status, _, body = self.call("GET", "/api/v1/namespaces/default")
        self.assertEqual(body["message"], f'namespaces "default" is forbidden: User '
                         f'"{USER}" cannot get resource "namespaces" in API group "" '
                         'in the namespace "default"')
        status, _, body = self.call("GET", "/api/v1/namespaces")
        self.assertEqual(body["message"], f'namespaces is forbidden: User "{USER}" '
                         'cannot list resource "namespaces" in API group "" at the '
                         "cluster scope")

    def test_forbid_apps_group(self):
        self.seed(DEPLOYMENT)
        self.emulator.control("POST", "forbid", {
            "namespace": "default", "verbs": ["patch"], "resource": "deployments"})
        status, _, body = self.call("PATCH", DEPLOYMENTS.format(ns="default") + "/web",
                                    {}, content_type="application/merge-patch+json")
        self.assertEqual(status, 403)
        self.assertEqual(body["message"], f'deployments.apps "web" is forbidden: User '
                         f'"{USER}" cannot patch resource "deployments" in API group '
                         '"apps" in the namespace "default"')

    def test_forbid_rejects_bad_rule(self):
        status, answer = self.emulator.control("POST", "forbid", {"verbs": "update"})
        self.assertEqual(status, 400)
        self.assertIn("verbs", answer["error"])


class ConflictTest(EmulatorTestCase):
    PATH = SECRETS.format(ns="default") + "/api"

    def test_concurrent_writer_causes_409(self):
        self.create_secret()
        read = self.get(self.PATH)
        status, _ = self.emulator.control("POST", "conflict", {
            "namespace": "default", "name": "api", "resource": "secrets", "count": 1})
        self.assertEqual(status, 201)
        read["data"]["token"] = b64("new")
        status, _, body = self.call("PUT", self.PATH, read)
        self.assertEqual(status, 409)
        self.assertIn("the object has been modified", body["message"])
        fresh = self.get(self.PATH)
        self.assertGreater(int(fresh["metadata"]["resourceVersion"]),
                           int(read["metadata"]["resourceVersion"]))
        self.assertIn("k8s-emulator.test/concurrent-writer",
                      fresh["metadata"]["annotations"])
        self.assertEqual(fresh["data"], {"token": b64("old")})
        fresh["data"]["token"] = b64("new")
        status, _, body = self.call("PUT", self.PATH, fresh)
        self.assertEqual(status, 200, body)

    def test_count_two(self):
        self.create_secret()
        self.emulator.control("POST", "conflict", {
            "namespace": "default", "name": "api", "count": 2})
        for _ in range(2):
            read = self.get(self.PATH)
            status, _, _ = self.call("PUT", self.PATH, read)
            self.assertEqual(status, 409)
        read = self.get(self.PATH)
        read["data"]["token"] = b64("third")
        self.assertEqual(self.call("PUT", self.PATH, read)[0], 200)

    def test_unconditional_patch_succeeds(self):
        self.create_secret()
        self.emulator.control("POST", "conflict", {
            "namespace": "default", "name": "api", "count": 1, "data_key": "foreign"})
        status, _, body = self.call("PATCH", self.PATH, {"data": {"token": b64("new")}},
                                    content_type="application/merge-patch+json")
        self.assertEqual(status, 200)
        self.assertEqual(set(body["data"]), {"token", "foreign"})

    def test_threads_with_retries_lose_no_update(self):
        self.create_secret(data={"count": b64("0")})
        workers, increments = 4, 5
        failures = []

        def increment():
            for _ in range(increments):
                for _attempt in range(200):
                    current = self.emulator.request("GET", self.PATH)[2]
                    value = int(base64.b64decode(current["data"]["count"]))
                    current["data"]["count"] = b64(str(value + 1))
                    status = self.emulator.request("PUT", self.PATH, current)[0]
                    if status == 200:
                        break
                    if status != 409:
                        failures.append(status)
                        return

        threads = [threading.Thread(target=increment) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(failures, [])
        final = self.get(self.PATH)
        self.assertEqual(base64.b64decode(final["data"]["count"]),
                         str(workers * increments).encode())


class FailTest(EmulatorTestCase):
    def test_injected_503_with_retry_after(self):
        self.create_secret()
        status, _ = self.emulator.control("POST", "fail", {
            "method": "GET", "path_regex": "/secrets/api$", "status": 503,
            "count": 2, "retry_after": 3})
        self.assertEqual(status, 201)
        for _ in range(2):
            status, headers, body = self.call("GET", SECRETS.format(ns="default") + "/api")
            self.assertEqual(status, 503)
            self.assertEqual(headers["Retry-After"], "3")
            self.assertEqual(body["kind"], "Status")
            self.assertEqual(body["reason"], "ServiceUnavailable")
            self.assertEqual(body["code"], 503)
            self.assertEqual(body["details"]["retryAfterSeconds"], 3)
        status, _, _ = self.call("GET", SECRETS.format(ns="default") + "/api")
        self.assertEqual(status, 200)

    def test_method_filter_and_429(self):
        self.create_secret()
        self.emulator.control("POST", "fail", {
            "method": "PUT", "path_regex": "secrets", "status": 429, "count": 1})
        self.assertEqual(self.call("GET", SECRETS.format(ns="default") + "/api")[0], 200)
        current = self.get(SECRETS.format(ns="default") + "/api")
        status, _, body = self.call("PUT", SECRETS.format(ns="default") + "/api", current)
        self.assertEqual(status, 429)
        self.assertEqual(body["reason"], "TooManyRequests")

    def test_injected_500(self):
        self.emulator.control("POST", "fail", {"path_regex": ".", "status": 500})
        status, _, body = self.call("GET", "/version")
        self.assertEqual(status, 500)
        self.assertEqual(body["reason"], "InternalError")

    def test_rejects_bad_rule(self):
        status, _ = self.emulator.control("POST", "fail", {"path_regex": "(", "status": 500})
        self.assertEqual(status, 400)
        status, _ = self.emulator.control("POST", "fail", {"path_regex": "x", "status": 200})
        self.assertEqual(status, 400)


class RequestLogTest(EmulatorTestCase):
    def test_log_records_requests(self):
        self.emulator.control("DELETE", "requests")
        self.create_secret(data={}, stringData={"token": "s3cr3t"})
        self.call("PATCH", SECRETS.format(ns="default") + "/api?fieldManager=kw",
                  {"data": {"token": b64("x")}},
                  content_type="application/merge-patch+json")
        self.call("GET", SECRETS.format(ns="default") + "/missing")
        status, answer = self.emulator.control("GET", "requests")
        self.assertEqual(status, 200)
        log = answer["requests"]
        self.assertEqual([(e["method"], e["status"]) for e in log],
                         [("POST", 201), ("PATCH", 200), ("GET", 404)])
        self.assertEqual(log[0]["path"], "/api/v1/namespaces/default/secrets")
        self.assertEqual(log[0]["content_type"], "application/json")
        self.assertEqual(log[0]["body"]["stringData"], {"token": "s3cr3t"})
        self.assertEqual(log[1]["query"], {"fieldManager": "kw"})
        self.assertEqual(log[1]["content_type"], "application/merge-patch+json")
        self.assertNotIn("s3cr3t", self.emulator.read_stderr())
        self.assertEqual(self.emulator.control("DELETE", "requests")[0], 200)
        self.assertEqual(self.emulator.control("GET", "requests")[1]["requests"], [])


class SeedAndResetTest(EmulatorTestCase):
    def test_seed_creates_namespace_on_demand(self):
        answer = self.seed({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "s", "namespace": "fresh"},
                            "data": {"k": b64("v")}})
        self.assertEqual(answer["created"][0]["name"], "s")
        self.get("/api/v1/namespaces/fresh")

    def test_seed_labels_existing_namespace(self):
        self.seed({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "default", "labels": {"keywheel": "on"}}})
        labels = self.get("/api/v1/namespaces/default")["metadata"]["labels"]
        self.assertEqual(labels["keywheel"], "on")

    def test_bad_seed_changes_nothing(self):
        status, answer = self.emulator.control("POST", "seed", [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ok"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"},
             "data": {"k": "!!"}},
        ])
        self.assertEqual(status, 400)
        self.assertIn("seed item 1", answer["error"])
        status, _, _ = self.call("GET", SECRETS.format(ns="default") + "/ok")
        self.assertEqual(status, 404)

    def test_reset_clears_objects_and_rules(self):
        before = self.create_secret()
        self.emulator.control("POST", "forbid", {"verbs": ["get"], "resource": "*"})
        self.emulator.control("POST", "reset")
        status, _, _ = self.call("GET", SECRETS.format(ns="default") + "/api")
        self.assertEqual(status, 404)
        after = self.create_secret()
        self.assertGreater(int(after["metadata"]["resourceVersion"]),
                           int(before["metadata"]["resourceVersion"]))


class WatchTest(EmulatorTestCase):
    def open_watch(self, path):
        connection = http.client.HTTPConnection("127.0.0.1", self.emulator.port,
                                                timeout=5)
        connection.request("GET", path)
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        self.addCleanup(connection.close)
        return response

    def read_event(self, response):
        line = response.readline()
        self.assertTrue(line, "watch stream ended")
        return json.loads(line)

    def test_events_from_version(self):
        created = self.create_secret()
        version = created["metadata"]["resourceVersion"]
        response = self.open_watch(SECRETS.format(ns="default")
                                   + f"?watch=true&resourceVersion={version}"
                                   "&timeoutSeconds=5")
        created["data"]["token"] = b64("new")
        self.call("PUT", SECRETS.format(ns="default") + "/api", created)
        self.call("DELETE", SECRETS.format(ns="default") + "/api")
        modified = self.read_event(response)
        self.assertEqual(modified["type"], "MODIFIED")
        self.assertEqual(modified["object"]["kind"], "Secret")
        self.assertEqual(modified["object"]["data"]["token"], b64("new"))
        deleted = self.read_event(response)
        self.assertEqual(deleted["type"], "DELETED")
        self.assertGreater(int(deleted["object"]["metadata"]["resourceVersion"]),
                           int(modified["object"]["metadata"]["resourceVersion"]))

    def test_initial_state_and_timeout(self):
        self.create_secret("a")
        response = self.open_watch(SECRETS.format(ns="default")
                                   + "?watch=1&timeoutSeconds=1")
        self.assertEqual(self.read_event(response)["type"], "ADDED")
        started = time.monotonic()
        self.assertEqual(response.read(), b"")
        self.assertLess(time.monotonic() - started, 3)

    def test_label_selector_transitions(self):
        created = self.create_secret(metadata={"labels": {"keywheel": "on"}})
        version = created["metadata"]["resourceVersion"]
        response = self.open_watch(SECRETS.format(ns="default")
                                   + f"?watch=true&resourceVersion={version}"
                                   "&labelSelector=keywheel%3Don")
        self.call("PATCH", SECRETS.format(ns="default") + "/api",
                  {"metadata": {"labels": {"keywheel": "off"}}},
                  content_type="application/merge-patch+json")
        self.assertEqual(self.read_event(response)["type"], "DELETED")
        self.call("PATCH", SECRETS.format(ns="default") + "/api",
                  {"metadata": {"labels": {"keywheel": "on"}}},
                  content_type="application/merge-patch+json")
        self.assertEqual(self.read_event(response)["type"], "ADDED")

    def test_send_initial_events(self):
        self.create_secret("a")
        response = self.open_watch(
            SECRETS.format(ns="default") + "?watch=true&sendInitialEvents=true"
            "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
        self.assertEqual(self.read_event(response)["type"], "ADDED")
        bookmark = self.read_event(response)
        self.assertEqual(bookmark["type"], "BOOKMARK")
        self.assertEqual(bookmark["object"]["metadata"]["annotations"],
                         {"k8s.io/initial-events-end": "true"})

    def test_too_old_version(self):
        created = self.create_secret()
        self.emulator.control("POST", "reset")
        old = int(created["metadata"]["resourceVersion"]) - 1
        response = self.open_watch(SECRETS.format(ns="default")
                                   + f"?watch=true&resourceVersion={old}")
        event = self.read_event(response)
        self.assertEqual(event["type"], "ERROR")
        self.assertEqual(event["object"]["code"], 410)
        self.assertEqual(event["object"]["reason"], "Expired")

    def test_rollout_progress_is_watched(self):
        self.seed(DEPLOYMENT)
        deployment = self.get(DEPLOYMENTS.format(ns="default") + "/web")
        version = deployment["metadata"]["resourceVersion"]
        response = self.open_watch(
            DEPLOYMENTS.format(ns="default") + f"?watch=true&resourceVersion={version}"
            "&fieldSelector=metadata.name%3Dweb&timeoutSeconds=5")
        self.call("PATCH", DEPLOYMENTS.format(ns="default") + "/web", restart_patch(),
                  content_type="application/strategic-merge-patch+json")
        while True:
            event = self.read_event(response)
            self.assertEqual(event["type"], "MODIFIED")
            if rollout_done(event["object"]):
                break


def protobuf_field(number: int, payload: bytes) -> bytes:
    """Encode one length-delimited protobuf field."""
    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def protobuf_envelope(kind: str, message: bytes) -> bytes:
    type_meta = protobuf_field(1, b"v1") + protobuf_field(2, kind.encode())
    return (b"k8s\x00" + protobuf_field(1, type_meta) + protobuf_field(2, message)
            + protobuf_field(4, b"application/vnd.kubernetes.protobuf"))


class ProtobufTest(EmulatorTestCase):
    CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

    def test_create_secret(self):
        metadata = (protobuf_field(1, b"pb") + protobuf_field(3, b"")
                    + protobuf_field(11, protobuf_field(1, b"team")
                                     + protobuf_field(2, b"pay")))
        secret = (protobuf_field(1, metadata)
                  + protobuf_field(2, protobuf_field(1, b"token")
                                   + protobuf_field(2, b"s3cr3t"))
                  + protobuf_field(3, b"Opaque"))
        status, _, created = self.call("POST", SECRETS.format(ns="default"),
                                       raw=protobuf_envelope("Secret", secret),
                                       content_type=self.CONTENT_TYPE)
        self.assertEqual(status, 201, created)
        self.assertEqual(created["data"], {"token": "czNjcjN0"})
        self.assertEqual(created["metadata"]["labels"], {"team": "pay"})
        log = self.emulator.control("GET", "requests")[1]["requests"]
        self.assertEqual(log[-1]["content_type"], self.CONTENT_TYPE)
        self.assertEqual(log[-1]["body"]["data"], {"token": "czNjcjN0"})
        self.assertNotIn("namespace", log[-1]["body"]["metadata"])

    def test_create_namespace(self):
        namespace = protobuf_field(1, protobuf_field(1, b"from-pb"))
        status, _, created = self.call("POST", "/api/v1/namespaces",
                                       raw=protobuf_envelope("Namespace", namespace),
                                       content_type=self.CONTENT_TYPE)
        self.assertEqual(status, 201, created)
        self.assertEqual(created["metadata"]["name"], "from-pb")

    def test_other_kinds_rejected(self):
        status, _, body = self.call("POST", DEPLOYMENTS.format(ns="default"),
                                    raw=protobuf_envelope("Deployment", b""),
                                    content_type=self.CONTENT_TYPE)
        self.assertEqual(status, 415)
        self.assertIn("protobuf only for Secret and Namespace", body["message"])

    def test_garbage_rejected(self):
        status, _, body = self.call("POST", SECRETS.format(ns="default"),
                                    raw=b"not protobuf", content_type=self.CONTENT_TYPE)
        self.assertEqual(status, 400)
        self.assertEqual(body["reason"], "BadRequest")


class TableTest(EmulatorTestCase):
    ACCEPT = ("application/json;as=Table;v=v1;g=meta.k8s.io,"
              "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")

    def test_secret_table(self):
        self.create_secret(data={"a": b64("1"), "b": b64("2")})
        _, _, table = self.call("GET", SECRETS.format(ns="default"),
                                headers={"Accept": self.ACCEPT})
        self.assertEqual(table["kind"], "Table")
        self.assertEqual([c["name"] for c in table["columnDefinitions"]],
                         ["Name", "Type", "Data", "Age"])
        self.assertEqual(table["rows"][0]["cells"][:3], ["api", "Opaque", 2])
        self.assertEqual(table["rows"][0]["object"]["kind"], "PartialObjectMetadata")

    def test_deployment_table(self):
        self.seed(DEPLOYMENT)
        _, _, table = self.call("GET", DEPLOYMENTS.format(ns="default") + "/web",
                                headers={"Accept": self.ACCEPT})
        self.assertEqual(table["rows"][0]["cells"][:4], ["web", "3/3", 3, 3])


class HelperTest(unittest.TestCase):
    def test_go_base64_errors(self):
        # Offsets checked against Go 1.19's encoding/json []byte decoding.
        cases = {"": None, "YQ==": None, "YQ==\n": None, "abcd\nefgh": None,
                 "abc": "0", "ab=c": "2", "a===": "1", "YQ=": "3", "YQ==x": "4",
                 "Y Q==": "1", "é": "0"}
        for text, offset in cases.items():
            error = k8s_emulator.go_base64_error(text)
            with self.subTest(text=text):
                if offset is None:
                    self.assertIsNone(error)
                else:
                    self.assertEqual(error, f"illegal base64 data at input byte {offset}")

    def test_human_duration(self):
        cases = {5: "5s", 119: "119s", 125: "2m5s", 300: "5m", 600: "10m",
                 3 * 3600: "3h", 3 * 3600 + 300: "3h5m", 9 * 3600: "9h",
                 50 * 3600: "2d2h", 8 * 86400: "8d", 800 * 86400: "2y70d"}
        for seconds, expected in cases.items():
            with self.subTest(seconds=seconds):
                self.assertEqual(k8s_emulator.human_duration(seconds), expected)

    def test_strategic_merge_directives(self):
        original = {"metadata": {"finalizers": ["a", "b"]},
                    "spec": {"strategy": {"type": "RollingUpdate",
                                          "rollingUpdate": {"maxSurge": 1}}},
                    "env": [{"name": "A", "value": "1"}]}
        patch = {"metadata": {"finalizers": ["c"],
                              "$deleteFromPrimitiveList/finalizers": ["a"]},
                 "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
                 "env": [{"$patch": "replace"}, {"name": "B", "value": "2"}]}
        result = k8s_emulator.strategic_merge(original, patch)
        self.assertEqual(result["metadata"]["finalizers"], ["b", "c"])
        self.assertEqual(result["spec"]["strategy"], {"type": "Recreate"})
        self.assertEqual(result["env"], [{"name": "B", "value": "2"}])

    def test_merge_patch_rfc7386_examples(self):
        # Examples from RFC 7386, appendix A.
        cases = [
            ({"a": "b"}, {"a": "c"}, {"a": "c"}),
            ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
            ({"a": "b"}, {"a": None}, {}),
            ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
            ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
            ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
            ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ]
        for target, patch, expected in cases:
            with self.subTest(patch=patch):
                self.assertEqual(k8s_emulator.merge_patch(target, patch), expected)

    def test_json_patch_move_and_copy(self):
        document = {"a": {"x": 1}, "list": [1, 2]}
        result = k8s_emulator.apply_json_patch(document, [
            {"op": "copy", "from": "/a/x", "path": "/b"},
            {"op": "move", "from": "/a", "path": "/c"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "add", "path": "/list/0", "value": 0},
        ])
        self.assertEqual(result, {"b": 1, "c": {"x": 1}, "list": [0, 1, 2, 3]})
        self.assertEqual(document, {"a": {"x": 1}, "list": [1, 2]})


if __name__ == "__main__":
    unittest.main()
