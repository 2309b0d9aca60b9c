"""`meshtrace control` as a real process, driven by two fake sidecars speaking the HTTP API
(docs/control-api.md), and `meshtrace status` against it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshtrace.control import identity

COLLECTOR = "otel-collector.istio-system.svc.cluster.local"

SIDECAR_DEFAULTS = {"identity": "spiffe://cluster.local/ns/default/sa/default", "mtls": True}


def bearer(
    key: bytes, pod: str, namespace: str = "default", service_account: str = "default"
) -> dict[str, str]:
    """The Authorization header of `pod`'s bootstrap credential, minted as `meshtrace up` does."""
    token = identity.mint(key, identity.Claims(namespace, service_account, pod))
    return {"Authorization": f"Bearer {token}"}


def frontend_telemetry(percentage: float) -> str:
    return f"""\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: frontend-tracing
  namespace: default
spec:
  selector:
    matchLabels:
      app: frontend
  tracing:
  - randomSamplingPercentage: {percentage}
"""


class FakeSidecar:
    """A sidecar as the control plane sees it: register, heartbeat, long-poll, ACK/NACK."""

    def __init__(self, base: str, key: bytes, workload: str, pod: str, ip: str, inbound: int) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers.update(bearer(key, pod))
        body: dict[str, Any] = {
            "workload": workload,
            "namespace": "default",
            "pod": pod,
            "ip": ip,
            "labels": {"app": workload, "version": "v1"},
            "ports": {"inbound": inbound, "outbound": 15001, "admin": 15000, "app": 8080},
            "mode": "sidecar",
        }
        answer = self.http.post(f"{base}/v1/register", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        self.node_id: str = answer.json()["node_id"]
        self.heartbeat_s: float = answer.json()["heartbeat_s"]
        self.version = ""
        self.config: dict[str, Any] = {}
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    def poll(self, wait: float = 0.0) -> int:
        answer = self.http.get(
            f"{self.base}/v1/config/{self.node_id}",
            params={"version": self.version, "wait": str(wait)},
            timeout=wait + 10,
        )
        if answer.status_code == 200:
            self.version, self.config = answer.json()["version"], answer.json()["config"]
        return answer.status_code

    def ack(
        self, status: str = "ACK", error: str | None = None, version: str | None = None
    ) -> requests.Response:
        body = {"version": version or self.version, "status": status, "error": error}
        return self.http.post(f"{self.base}/v1/ack/{self.node_id}", json=body, timeout=10)

    def start_heartbeats(self, every: float) -> None:
        def beat() -> None:
            session = requests.Session()  # requests.Session is not shared across threads
            session.headers.update(self.http.headers)
            while not self._stop.wait(every):
                session.post(f"{self.base}/v1/heartbeat/{self.node_id}", timeout=5)

        self._beater = threading.Thread(target=beat, daemon=True)
        self._beater.start()

    def stop_heartbeats(self) -> None:
        self._stop.set()
        if self._beater is not None:
            self._beater.join(timeout=5)

    def endpoints(self, service: str) -> list[dict[str, Any]]:
        return list(self.config["services"][f"{service}.default.svc.cluster.local"]["endpoints"])


@pytest.fixture
def mesh_dir(tmp_path: Path, mesh_yaml: Callable[..., str]) -> Path:
    (tmp_path / "mesh.yaml").write_text(mesh_yaml(COLLECTOR, 10, {"backend": 8080, "frontend": 80}))
    (tmp_path / "frontend-telemetry.yaml").write_text(frontend_telemetry(50))
    return tmp_path


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    """The control plane's signing key, made before it starts (it finds it in --data-dir)."""
    return identity.load_or_create_key(tmp_path / "control-data")


@pytest.fixture
def control(meshtrace_process: Any, mesh_dir: Path, key: bytes) -> Callable[..., str]:
    def start(*extra: str) -> str:
        proc = meshtrace_process(
            [
                "control",
                "-f",
                str(mesh_dir),
                "--listen",
                "127.0.0.1:0",
                "--poll",
                "0.05",
                "--endpoint",
                f"{COLLECTOR}=127.0.0.1:4317",
                "--data-dir",
                str(mesh_dir / "control-data"),
                *extra,
            ]
        )
        host, port = proc.wait_for_listeners("control")["control"]
        return f"http://{host}:{port}"

    return start


@pytest.fixture
def sidecars(control: Callable[..., str], key: bytes) -> Iterator[tuple[str, FakeSidecar, FakeSidecar]]:
    base = control()
    frontend = FakeSidecar(base, key, "frontend", "frontend-0", "127.0.1.1", 15006)
    backend = FakeSidecar(base, key, "backend", "backend-0", "127.0.1.2", 15006)
    yield base, frontend, backend
    frontend.stop_heartbeats()
    backend.stop_heartbeats()


def test_register_and_resolve_each_other(sidecars: tuple[str, FakeSidecar, FakeSidecar]) -> None:
    base, frontend, backend = sidecars
    assert requests.get(f"{base}/ready", timeout=5).status_code == 200
    assert frontend.heartbeat_s == 2.0
    assert frontend.poll() == 200 and backend.poll() == 200
    assert frontend.endpoints("backend") == [
        {"ip": "127.0.1.2", "port": 15006, "app_port": 8080, "pod": "backend-0", **SIDECAR_DEFAULTS}
    ]
    assert backend.endpoints("frontend") == [
        {"ip": "127.0.1.1", "port": 15006, "app_port": 8080, "pod": "frontend-0", **SIDECAR_DEFAULTS}
    ]
    assert frontend.config["services"]["backend.default.svc.cluster.local"]["ports"][0]["port"] == 8080
    # the workload's effective config, exactly as explain resolves it
    assert frontend.config["tracing"]["client"]["random_sampling_percentage"] == 50.0
    assert backend.config["tracing"]["client"]["random_sampling_percentage"] == 10.0
    # the provider points at the static --endpoint
    assert frontend.config["tracing"]["server"]["provider"]["endpoint"] == "http://127.0.0.1:4317"
    assert frontend.config["services"][COLLECTOR]["endpoints"] == [
        {"ip": "127.0.0.1", "port": 4317, "app_port": 4317, "pod": None}
    ]
    # the same version again: 304 after the wait
    assert frontend.poll(wait=0.2) == 304


def test_long_poll_gets_a_file_edit_and_only_affected_nodes_change(
    sidecars: tuple[str, FakeSidecar, FakeSidecar], mesh_dir: Path
) -> None:
    _, frontend, backend = sidecars
    frontend.poll()
    backend.poll()
    old_frontend, old_backend = frontend.version, backend.version
    with ThreadPoolExecutor(2) as pool:
        front = pool.submit(frontend.poll, 20.0)
        back = pool.submit(backend.poll, 2.0)
        # parked or not yet: a poll arriving after the edit sees a newer version and returns at once
        (mesh_dir / "frontend-telemetry.yaml").write_text(frontend_telemetry(25))
        assert front.result(timeout=30) == 200
        assert back.result(timeout=30) == 304  # backend's config did not change
    assert frontend.version != old_frontend and backend.version == old_backend
    assert frontend.config["tracing"]["client"]["random_sampling_percentage"] == 25.0


def test_invalid_edit_is_reported_and_changes_nothing(
    sidecars: tuple[str, FakeSidecar, FakeSidecar], mesh_dir: Path, wait_until: Callable[..., Any]
) -> None:
    base, frontend, _ = sidecars
    frontend.poll()
    version = frontend.version
    (mesh_dir / "frontend-telemetry.yaml").write_text("kind: Telemetry\nspec: [unclosed\n")

    def errors() -> list[dict[str, Any]]:
        return list(requests.get(f"{base}/v1/status", timeout=5).json()["config_errors"])

    reported = wait_until(errors, what="config_errors in /v1/status")
    assert "frontend-telemetry.yaml" in reported[0]["error"]
    assert frontend.poll(wait=0.3) == 304 and frontend.version == version
    (mesh_dir / "frontend-telemetry.yaml").write_text(frontend_telemetry(75))
    assert frontend.poll(wait=20) == 200
    assert frontend.config["tracing"]["client"]["random_sampling_percentage"] == 75.0
    assert errors() == []


def test_nack_keeps_the_acked_version(sidecars: tuple[str, FakeSidecar, FakeSidecar]) -> None:
    base, frontend, _ = sidecars
    frontend.poll()
    assert frontend.ack().status_code == 200
    answer = frontend.ack("NACK", "custom tag value is not a string", version="f00")
    assert answer.status_code == 200
    node = next(
        n
        for n in requests.get(f"{base}/v1/status", timeout=5).json()["nodes"]
        if n["node_id"] == frontend.node_id
    )
    assert node["acked_version"] == frontend.version == node["sent_version"]
    assert node["last_nack"]["version"] == "f00"
    assert node["last_nack"]["error"] == "custom tag value is not a string"


def test_missed_heartbeats_remove_the_endpoint(
    control: Callable[..., str], key: bytes, wait_until: Callable[..., Any]
) -> None:
    base = control("--heartbeat", "0.3")
    frontend = FakeSidecar(base, key, "frontend", "frontend-0", "127.0.1.1", 15006)
    backend = FakeSidecar(base, key, "backend", "backend-0", "127.0.1.2", 15006)
    assert frontend.heartbeat_s == 0.3
    frontend.start_heartbeats(0.1)
    try:
        frontend.poll()
        # backend never heartbeats: after 3 missed heartbeats it leaves every service, and the
        # frontend's long-poll brings the news
        wait_until(
            lambda: frontend.poll(wait=5) == 200 and frontend.endpoints("backend") == [], what="removal"
        )
        status = requests.get(f"{base}/v1/status", timeout=5).json()
        rows = {n["node_id"]: n for n in status["nodes"]}
        assert rows[backend.node_id]["healthy"] is False and rows[frontend.node_id]["healthy"] is True
        # a heartbeat brings it back
        assert backend.http.post(f"{base}/v1/heartbeat/{backend.node_id}", timeout=5).status_code == 200
        wait_until(lambda: frontend.poll(wait=5) == 200 and frontend.endpoints("backend"), what="return")
    finally:
        frontend.stop_heartbeats()


def test_bad_input(sidecars: tuple[str, FakeSidecar, FakeSidecar]) -> None:
    base, frontend, _ = sidecars
    for method, path in [
        ("post", "/v1/heartbeat/sidecar~nobody"),
        ("get", "/v1/config/sidecar~nobody"),
        ("post", "/v1/ack/sidecar~nobody"),
    ]:
        answer = frontend.http.request(method, base + path, json={"version": "x", "status": "ACK"}, timeout=5)
        assert answer.status_code == 404 and "unknown node" in answer.json()["error"]
    answer = frontend.http.post(
        f"{base}/v1/register", data=b"{not json", headers={"Content-Type": "application/json"}, timeout=5
    )
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]
    answer = frontend.http.post(
        f"{base}/v1/register", json={"workload": "x", "namespace": "default", "pod": "p"}, timeout=5
    )
    assert answer.status_code == 400 and "'ip'" in answer.json()["error"]
    answer = frontend.http.post(
        f"{base}/v1/ack/{frontend.node_id}", json={"version": "v", "status": "OK"}, timeout=5
    )
    assert answer.status_code == 400 and "'status'" in answer.json()["error"]
    answer = frontend.http.get(f"{base}/v1/config/{frontend.node_id}", params={"wait": "soon"}, timeout=5)
    assert answer.status_code == 400 and "'wait'" in answer.json()["error"]


def test_writes_from_web_pages_are_refused(
    sidecars: tuple[str, FakeSidecar, FakeSidecar], key: bytes
) -> None:
    """Issue 10, finding 9 (CSRF): a POST a browser sends cross-origin without a preflight (a
    `text/plain` body, or a foreign Origin) changes nothing; same-origin and tool requests work."""
    base, frontend, _ = sidecars
    body = {"workload": "intruder", "namespace": "default", "pod": "intruder-0", "ip": "127.0.1.9"}
    body["ports"] = {"inbound": 15006}
    answer = requests.post(
        f"{base}/v1/register", data=json.dumps(body), headers={"Content-Type": "text/plain"}, timeout=5
    )
    assert answer.status_code == 415 and "application/json" in answer.json()["error"]
    answer = requests.post(
        f"{base}/v1/ack/{frontend.node_id}",
        data="status=NACK",
        timeout=5,  # a form post
    )
    assert answer.status_code == 415
    for origin in ("http://evil.example", "null", base.replace("127.0.0.1", "localhost")):
        answer = requests.post(f"{base}/v1/register", json=body, headers={"Origin": origin}, timeout=5)
        assert answer.status_code == 403 and "cross-origin" in answer.json()["error"], origin
        answer = requests.post(
            f"{base}/v1/heartbeat/{frontend.node_id}", headers={"Origin": origin}, timeout=5
        )
        assert answer.status_code == 403, origin
    pods = {n["pod"] for n in requests.get(f"{base}/v1/status", timeout=5).json()["nodes"]}
    assert "intruder-0" not in pods
    answer = requests.post(
        f"{base}/v1/register", json=body, headers={"Origin": base, **bearer(key, "intruder-0")}, timeout=5
    )
    assert answer.status_code == 200, answer.text
    assert frontend.http.post(f"{base}/v1/heartbeat/{frontend.node_id}", timeout=5).status_code == 200


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshtrace", "status", *args], capture_output=True, text=True, timeout=60
    )


def test_status_command(sidecars: tuple[str, FakeSidecar, FakeSidecar]) -> None:
    base, frontend, backend = sidecars
    frontend.poll()
    frontend.ack()
    backend.poll()
    backend.ack("NACK", "bad config")
    result = _status("--control", base)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NODE",
        "WORKLOAD",
        "NAMESPACE",
        "IP",
        "SENT",
        "ACKED",
        "SYNC",
        "LAST",
        "NACK",
        "HEARTBEAT",
        "IDENTITY",
        "CERT",
    ]
    front = next(line for line in lines if frontend.node_id in line)
    assert "frontend" in front and frontend.version in front and "SYNCED" in front
    # no certificate yet; then one valid for 24 h
    assert "spiffe://cluster.local/ns/default/sa/default" in front and front.rstrip().endswith("-")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    assert frontend.http.post(f"{base}/v1/certs/{frontend.node_id}", json={"csr": pem}, timeout=5).ok
    front = next(line for line in _status("--control", base).stdout.splitlines() if frontend.node_id in line)
    assert front.rstrip().endswith(("in 24.0h", "in 23.9h"))
    back = next(line for line in lines if backend.node_id in line)
    assert "NACKED" in back and "bad config" in back


@pytest.mark.e2e
def test_status_unreachable_control_plane() -> None:
    result = _status("--control", "http://127.0.0.1:9")
    assert result.returncode != 0
    assert "cannot reach the control plane at http://127.0.0.1:9" in result.stderr


def test_serves_the_seed_manifests(
    meshtrace_process: Any, seed_manifests: Path, key: bytes, tmp_path: Path
) -> None:
    proc = meshtrace_process(
        [
            "control",
            "-f",
            str(seed_manifests),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "control-data"),
        ]
    )
    host, port = proc.wait_for_listeners("control")["control"]
    base = f"http://{host}:{port}"
    frontend = FakeSidecar(base, key, "frontend", "frontend-0", "127.0.1.1", 15006)
    assert frontend.poll() == 200
    # the effective values istiod would give: the workload Telemetry's 50 %, the mesh provider
    assert frontend.config["tracing"]["client"]["random_sampling_percentage"] == 50.0
    provider = frontend.config["tracing"]["client"]["provider"]
    assert provider["service"] == COLLECTOR and provider["endpoint"] is None  # no collector registered
    assert any("not sent" in w for w in frontend.config["warnings"])
    assert frontend.endpoints("frontend")[0]["pod"] == "frontend-0"
    status = requests.get(f"{base}/v1/status", timeout=5).json()
    assert status["config_errors"] == []


def test_only_a_pods_own_credential_speaks_for_it(
    sidecars: tuple[str, FakeSidecar, FakeSidecar], key: bytes
) -> None:
    """Issue 12: the hijack. Without a credential (401) or with another pod's (403), nobody can
    register as backend-0 with another address or port, read its config, ACK/NACK for it or keep
    it alive; the registry keeps the real backend."""
    base, frontend, backend = sidecars
    hijack = {
        "workload": "backend",
        "namespace": "default",
        "pod": "backend-0",
        "ip": "127.0.1.66",
        "labels": {"app": "backend", "version": "v1"},
        "ports": {"inbound": 16666},
    }
    forged = identity.mint(b"k" * 32, identity.Claims("default", "default", "backend-0"))
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401),
        ({"Authorization": f"Bearer {forged}"}, 401),  # signed with another key
        ({"Authorization": "Bearer v1.e30.AAAA"}, 401),
        (bearer(key, "frontend-0"), 403),  # another pod's own credential
        (bearer(key, "backend-0", service_account="admin"), 403),  # another service account
        (bearer(key, "backend-0", namespace="other"), 403),
    ]:
        for body in (hijack, {**hijack, "ip": "127.0.1.2", "ports": {"inbound": 16666}}):
            answer = requests.post(f"{base}/v1/register", json=body, headers=headers, timeout=5)
            assert answer.status_code == status, (headers, answer.text)
        node = f"{base}/v1/config/{backend.node_id}"
        assert requests.get(node, headers=headers, timeout=5).status_code == status
        ack = {"version": "x", "status": "NACK", "error": "spoofed"}
        answer = requests.post(f"{base}/v1/ack/{backend.node_id}", json=ack, headers=headers, timeout=5)
        assert answer.status_code == status
        answer = requests.post(f"{base}/v1/heartbeat/{backend.node_id}", headers=headers, timeout=5)
        assert answer.status_code == status
        if status == 401:
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert frontend.poll() == 200
    assert frontend.endpoints("backend") == [
        {"ip": "127.0.1.2", "port": 15006, "app_port": 8080, "pod": "backend-0", **SIDECAR_DEFAULTS}
    ]
    rows = requests.get(f"{base}/v1/status", timeout=5).json()["nodes"]  # read-only: no credential
    assert [n["last_nack"] for n in rows] == [None, None]
    assert {n["identity"] for n in rows} == {"spiffe://cluster.local/ns/default/sa/default"}
