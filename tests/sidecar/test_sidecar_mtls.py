"""Mutual TLS between real sidecars (issue 12): the control plane signs their certificates; a
gateway calls a backend sidecar over mTLS (auto mTLS), PeerAuthentication and DestinationRule
switch modes live, certificates rotate under traffic, expired and foreign certificates and
plaintext to a STRICT workload are refused, AuthorizationPolicy answers 403."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sidecar_helpers import get_json

from meshtrace.control import identity
from meshtrace.control.ca import CertificateAuthority

COLLECTOR = "otel-collector.istio-system.svc.cluster.local"
GATEWAY_SA = "istio-ingressgateway-service-account"
GATEWAY_ID = f"spiffe://cluster.local/ns/istio-system/sa/{GATEWAY_SA}"
BACKEND_ID = "spiffe://cluster.local/ns/default/sa/backend-sa"


@dataclass
class Mesh:
    dir: Path
    base_yaml: str
    control_url: str
    key: bytes
    gateway: Any
    backend: Any
    app_port: int

    def apply(self, extra: str, wait_until: Callable[..., Any], gateway_changes: bool = False) -> None:
        """Write the files with `extra` and wait until the backend (and the gateway, when its
        document changes too) runs the result."""
        proxies = self.proxies if gateway_changes else [self.backend]
        versions = [get_json(f"http://{p.address('admin')}/config_dump")["version"] for p in proxies]
        (self.dir / "mesh.yaml").write_text(self.base_yaml + extra)
        for proxy, version in zip(proxies, versions, strict=True):
            url = f"http://{proxy.address('admin')}/config_dump"
            wait_until(lambda u=url, v=version: get_json(u)["version"] != v, "a config push", timeout=20.0)

    @property
    def proxies(self) -> list[Any]:
        return [self.backend, self.gateway]

    def via_gateway(self, path: str = "/hello") -> int:
        req = urllib.request.Request(f"http://{self.gateway.address('gateway')}{path}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stats(self, proxy: Any) -> str:
        with urllib.request.urlopen(f"http://{proxy.address('stats')}/stats/prometheus", timeout=5) as r:
            return str(r.read().decode())

    def inbound(self) -> tuple[str, int]:
        host, port = self.backend.listeners["inbound"]
        return str(host), int(port)

    def certificate(self, pod: str) -> tuple[str, str, str]:
        """(chain PEM, key PEM, root PEM) issued to a registered pod of the mesh."""
        token = identity.mint(self.key, identity.Claims("default", "default", pod))
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        body = {"workload": "probe", "namespace": "default", "pod": pod, "ip": "127.0.9.9",
                "ports": {"inbound": 15006}}  # fmt: skip
        node = http.post(f"{self.control_url}/v1/register", json=body, timeout=5).json()["node_id"]
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        doc = http.post(f"{self.control_url}/v1/certs/{node}", json={"csr": pem}, timeout=5).json()
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return "".join(doc["cert_chain"][:-1]), key_pem, doc["root_cert"]


def probe_files(mesh: Mesh, tmp_path: Path) -> dict[str, Path]:
    """A certificate the mesh issued to a probe pod, as files: chain, key, root."""
    chain, key, root = mesh.certificate("probe-0")
    files = {}
    for name, text in (("chain", chain), ("key", key), ("root", root)):
        files[name] = tmp_path / f"probe-{name}.pem"
        files[name].write_text(text)
    return files


@pytest.fixture
def start_mesh(
    meshtrace_process: Any, tmp_path: Path, harness: Any, servers: Any, mesh_yaml: Callable[..., str]
) -> Iterator[Callable[..., Mesh]]:
    def start(ttl: float = 86400.0, extra: str = "", app_factory: Callable[[str], Any] | None = None) -> Mesh:
        data = tmp_path / "control-data"
        key = identity.load_or_create_key(data)
        tokens = {}
        for ns, pod, sa in (
            ("default", "backend-0", "backend-sa"),
            ("istio-system", "istio-ingressgateway-0", GATEWAY_SA),
        ):
            tokens[pod] = tmp_path / f"{pod}.token"
            identity.write_token(tokens[pod], identity.mint(key, identity.Claims(ns, sa, pod)))
        base = mesh_yaml(COLLECTOR, 0)
        (tmp_path / "mesh.yaml").write_text(base + extra)
        control = meshtrace_process(
            ["control", "-f", str(tmp_path / "mesh.yaml"), "--listen", "127.0.0.1:0", "--heartbeat", "0.5",
             "--poll", "0.05", "--data-dir", str(data), "--workload-cert-ttl", str(ttl),
             "--tls-listen", "127.0.0.1:0"]
        )  # fmt: skip
        control.wait_for_listeners("control", "control-tls")
        control_url = f"http://{control.address('control')}"
        # the sidecars speak to the control plane over TLS, trusting the mesh root
        tls_url = f"https://{control.address('control-tls')}"
        trust = ["--ca-root", str(data / "ca" / "root-cert.pem")]
        be_ip, gw_ip = harness.loopback(), harness.loopback()
        app = servers((app_factory or harness.backend_app)(be_ip))
        ports = ["--admin-port", "0", "--stats-port", "0", "--health-port", "0"]
        backend = meshtrace_process(
            ["sidecar", "--workload", "backend", "--pod", "backend-0", "--ip", be_ip, "--service-account",
             "backend-sa", "--labels", "app=backend,version=v1", "--app-port", str(app.port),
             "--control", tls_url, *trust, "--token-file", str(tokens["backend-0"]), "--no-access-log",
             "--inbound-port", "0", "--outbound-port", "0", *ports]
        )  # fmt: skip
        backend.wait_for_listeners("inbound", "outbound", "admin", "stats", "health")
        gateway = meshtrace_process(
            ["sidecar", "--mode", "gateway", "--workload", "istio-ingressgateway",
             "--namespace", "istio-system", "--pod", "istio-ingressgateway-0",
             "--service-account", GATEWAY_SA, "--labels", "app=istio-ingressgateway",
             "--ip", gw_ip, "--app-port", "8080",
             "--control", tls_url, *trust, "--token-file", str(tokens["istio-ingressgateway-0"]),
             "--no-access-log", "--gateway-port", "0", *ports, "--default-service", "backend.default"]
        )  # fmt: skip
        gateway.wait_for_listeners("gateway", "admin", "stats", "health")
        return Mesh(tmp_path, base, control_url, key, gateway, backend, app.port)

    yield start


@pytest.fixture
def mesh(start_mesh: Callable[..., Mesh], wait_until: Callable[..., Any]) -> Mesh:
    m = start_mesh()
    wait_until(lambda: m.via_gateway() == 200, "the gateway to reach the backend", timeout=20.0)
    return m


def plaintext_get(address: tuple[str, int]) -> int | None:
    """A plaintext request straight to a listener: its status, None when the connection is refused."""
    try:
        answer = requests.get(f"http://{address[0]}:{address[1]}/direct", timeout=5)
    except requests.ConnectionError:
        return None
    return answer.status_code


def test_sidecars_talk_mutual_tls_and_metrics_name_the_principals(mesh: Mesh) -> None:
    for _ in range(5):
        assert mesh.via_gateway() == 200
    server = mesh.stats(mesh.backend)
    mtls = [
        line
        for line in server.splitlines()
        if line.startswith("istio_requests_total{") and "mutual_tls" in line
    ]
    assert mtls, server
    assert f'source_principal="{GATEWAY_ID}"' in mtls[0]
    assert f'destination_principal="{BACKEND_ID}"' in mtls[0]
    assert 'source_workload="istio-ingressgateway"' in mtls[0]  # metadata believed from the mTLS peer
    client = [
        line for line in mesh.stats(mesh.gateway).splitlines() if line.startswith("istio_requests_total{")
    ]
    assert any(f'destination_principal="{BACKEND_ID}"' in line and f'source_principal="{GATEWAY_ID}"' in line
               and 'connection_security_policy="unknown"' in line for line in client)  # fmt: skip
    # PERMISSIVE (the default): plaintext on the same port still works, and is counted as such
    assert plaintext_get(mesh.inbound()) == 200
    server = mesh.stats(mesh.backend)
    assert any('connection_security_policy="none"' in line and 'source_principal="unknown"' in line
               for line in server.splitlines() if line.startswith("istio_requests_total{"))  # fmt: skip
    status = get_json(f"{mesh.control_url}/v1/status")
    row = next(n for n in status["nodes"] if n["pod"] == "backend-0")
    assert row["identity"] == BACKEND_ID and row["cert_expires_at"] > time.time() + 23 * 3600


def test_strict_refuses_plaintext_and_destination_rule_disable_breaks_it(
    mesh: Mesh, wait_until: Callable[..., Any]
) -> None:
    strict = """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
"""
    mesh.apply(strict, wait_until)
    host, port = mesh.inbound()
    curl = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{host}:{port}/"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert curl.returncode != 0 and curl.stdout in ("", "000"), (curl.stdout, curl.stderr)
    assert plaintext_get(mesh.inbound()) is None
    for _ in range(5):
        assert mesh.via_gateway() == 200  # the gateway's sidecar speaks mTLS
    # A DestinationRule DISABLE against the STRICT server: the client sends plaintext, refused
    disable = """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend-plain, namespace: istio-system}
spec:
  host: backend.default.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
"""
    mesh.apply(strict + disable, wait_until, gateway_changes=True)
    assert mesh.via_gateway() == 503
    # PERMISSIVE again with the DISABLE rule: plaintext from the gateway, reported as such
    mesh.apply(disable, wait_until)
    assert mesh.via_gateway() == 200
    server = mesh.stats(mesh.backend)
    # (a plaintext caller's metadata is believed only from a Service endpoint: not the gateway's)
    assert any('connection_security_policy="none"' in line and 'source_principal="unknown"' in line
               and 'response_code="200"' in line
               for line in server.splitlines() if line.startswith("istio_requests_total{"))  # fmt: skip


def _foreign_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A workload certificate (leaf and root) of another CA and trust domain, and its key."""
    evil = CertificateAuthority.self_signed(tmp_path / "evil-ca", "evil.local")
    key = ec.generate_private_key(ec.SECP256R1())
    spiffe = x509.UniformResourceIdentifier("spiffe://evil.local/ns/default/sa/default")
    chain, _ = evil.issue(key.public_key(), [spiffe], ttl_s=86400.0)
    cert_path, key_path = tmp_path / "evil.pem", tmp_path / "evil-key.pem"
    cert_path.write_text("".join(chain))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def mtls_get(address: tuple[str, int], cert: Path, key: Path, root: Path | None) -> int:
    """One request over mTLS with the given client certificate; raises on a refused handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if root is None:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(root))
    ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection(address, timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        tls.sendall(b"GET /direct HTTP/1.1\r\nhost: backend\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    if not data:  # TLS 1.3: the server checks the client certificate after the client's handshake
        raise ConnectionResetError("the server closed the connection without an answer")
    return int(data.split(b" ", 2)[1])


def test_rotation_under_traffic_and_expired_or_foreign_certificates_refused(
    start_mesh: Callable[..., Mesh], wait_until: Callable[..., Any], tmp_path: Path
) -> None:
    mesh = start_mesh(ttl=3.0)
    wait_until(lambda: mesh.via_gateway() == 200, "the gateway to reach the backend", timeout=20.0)
    # a certificate the mesh issued: accepted (the positive control of the refusals below)
    files = probe_files(mesh, tmp_path)
    assert mtls_get(mesh.inbound(), files["chain"], files["key"], files["root"]) == 200
    # certificates last 3 s and are renewed at half life: 8 s of traffic sees several rotations
    status = f"{mesh.control_url}/v1/status"
    first = {n["pod"]: n["cert_expires_at"] for n in get_json(status)["nodes"]}
    results = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        results.append(mesh.via_gateway())
        time.sleep(0.05)
    assert results.count(200) == len(results) > 50
    later = {n["pod"]: n["cert_expires_at"] for n in get_json(status)["nodes"]}
    assert (
        later["backend-0"] > first["backend-0"] + 2
        and later["istio-ingressgateway-0"] > first["istio-ingressgateway-0"]
    )
    # the probe's certificate has expired by now: refused
    with pytest.raises((ssl.SSLError, ConnectionError)):
        mtls_get(mesh.inbound(), files["chain"], files["key"], files["root"])
    # a certificate of another CA and trust domain: refused
    cert, key_path = _foreign_certificate(tmp_path)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        mtls_get(mesh.inbound(), cert, key_path, None)
    assert mesh.via_gateway() == 200


def test_authorization_policy_denies_with_rbac(mesh: Mesh, wait_until: Callable[..., Any]) -> None:
    policies = """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-ingress, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/istio-system/sa/*"]}}]
"""
    mesh.apply(policies, wait_until)
    assert mesh.via_gateway("/hello") == 200
    req = urllib.request.Request(f"http://{mesh.gateway.address('gateway')}/admin/users")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(req, timeout=10)
    assert denied.value.code == 403 and denied.value.read() == b"RBAC: access denied"
    # a plaintext caller has no principal: no ALLOW rule matches
    host, port = mesh.inbound()
    answer = requests.get(f"http://{host}:{port}/hello", timeout=5)
    assert answer.status_code == 403 and answer.text == "RBAC: access denied"
    server = mesh.stats(mesh.backend)
    denied_lines = [
        line for line in server.splitlines()
        if line.startswith("istio_requests_total{") and 'response_flags="RBAC"' in line
    ]  # fmt: skip
    assert len(denied_lines) == 2 and all('response_code="403"' in line for line in denied_lines)


def test_grpc_between_sidecars_is_h2_over_mutual_tls(
    start_mesh: Callable[..., Mesh], wait_until: Callable[..., Any], tmp_path: Path
) -> None:
    """gRPC into the gateway (h2c), then h2 over mTLS (ALPN istio-h2) to the backend's sidecar,
    then h2c to a grpcio app."""
    from grpc_apps import EchoApp, channel, method

    mesh = start_mesh(app_factory=EchoApp)
    ch = channel(mesh.gateway.address("gateway"), "backend.default:8080")
    unary = method(ch, "unary", "Unary")

    def answered() -> bool:
        try:
            return bool(unary(b"over mtls", timeout=5) == b"over mtls")
        except Exception:
            return False

    wait_until(answered, "a gRPC answer through the gateway", timeout=20.0)
    # the backend's listener offers h2 by ALPN and prefers it; HTTP/1.1 clients still get theirs
    files = probe_files(mesh, tmp_path)
    h2_list, http11_list = ["istio-h2", "istio", "h2"], ["istio-http/1.1", "istio", "http/1.1"]
    for offered, chosen in (
        (h2_list, "istio-h2"),
        (http11_list, "istio-http/1.1"),
        (["h2", "http/1.1"], "h2"),
    ):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_cert_chain(files["chain"], files["key"])
        ctx.load_verify_locations(files["root"])
        ctx.set_alpn_protocols(offered)
        with (
            socket.create_connection(mesh.inbound(), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="backend") as tls,
        ):
            assert tls.selected_alpn_protocol() == chosen
    got = list(method(ch, "bidi", "Bidi")(iter([b"a", b"b"]), timeout=10))
    assert got == [b"echo:a", b"echo:b"]
    ch.close()
    server = [
        line
        for line in mesh.stats(mesh.backend).splitlines()
        if line.startswith("istio_requests_total{") and 'request_protocol="grpc"' in line
    ]
    assert any('connection_security_policy="mutual_tls"' in line and 'grpc_response_status="0"' in line
               and f'source_principal="{GATEWAY_ID}"' in line for line in server), server  # fmt: skip
