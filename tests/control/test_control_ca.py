"""The control plane as the CA (issue 12): CSRs signed into SPIFFE certificates that Debian's
`openssl` verifies, a root kept across restarts, a plugged-in CA in istiod's cacerts layout."""

from __future__ import annotations

import datetime
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshtrace.control import identity

MESH = """
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: shop}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080}]
"""


def csr_for(names: list[str]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class Pod:
    def __init__(self, base: str, key: bytes, pod: str, service_account: str = "backend-sa") -> None:
        self.base = base
        self.http = requests.Session()
        token = identity.mint(key, identity.Claims("shop", service_account, pod))
        self.http.headers["Authorization"] = f"Bearer {token}"
        body = {"workload": "backend", "namespace": "shop", "pod": pod, "ip": "127.0.3.1",
                "labels": {"app": "backend"}, "ports": {"inbound": 15006},
                "service_account": service_account}  # fmt: skip
        answer = self.http.post(f"{base}/v1/register", json=body, timeout=5)
        assert answer.status_code == 200, answer.text
        self.node_id = answer.json()["node_id"]

    def certify(self, csr: str) -> requests.Response:
        return self.http.post(f"{self.base}/v1/certs/{self.node_id}", json={"csr": csr}, timeout=10)


@pytest.fixture
def start(meshtrace_process: Any, tmp_path: Path) -> Callable[..., tuple[str, bytes]]:
    (tmp_path / "mesh.yaml").write_text(MESH)

    def run(*extra: str) -> tuple[str, bytes]:
        data = tmp_path / "control-data"
        proc = meshtrace_process(
            ["control", "-f", str(tmp_path / "mesh.yaml"), "--listen", "127.0.0.1:0",
             "--data-dir", str(data), *extra]
        )  # fmt: skip
        host, port = proc.wait_for_listeners("control")["control"]
        return f"http://{host}:{port}", identity.load_or_create_key(data)

    return run


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_csr_signed_with_the_spiffe_id_and_verified_by_openssl(
    start: Callable[..., tuple[str, bytes]], tmp_path: Path
) -> None:
    base, key = start()
    pod = Pod(base, key, "backend-0")
    # the CSR asks for another identity: the certificate carries the authenticated one only
    answer = pod.certify(csr_for(["spiffe://cluster.local/ns/istio-system/sa/istiod"]))
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    spiffe = "spiffe://cluster.local/ns/shop/sa/backend-sa"
    assert doc["identity"] == spiffe
    leaf, root = tmp_path / "leaf.pem", tmp_path / "root.pem"
    leaf.write_text(doc["cert_chain"][0])
    root.write_text(doc["root_cert"])
    assert doc["cert_chain"][-1] == doc["root_cert"]
    assert openssl("verify", "-CAfile", str(root), str(leaf)).strip().endswith("OK")
    text = openssl("x509", "-in", str(leaf), "-noout", "-ext", "subjectAltName,basicConstraints", "-enddate")
    assert f"URI:{spiffe}" in text and "istiod" not in text and "CA:FALSE" in text
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    ttl = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=23, minutes=58) < ttl <= datetime.timedelta(hours=24)
    assert abs(doc["expires_at"] - cert.not_valid_after_utc.timestamp()) < 1
    row = requests.get(f"{base}/v1/status", timeout=5).json()["nodes"][0]
    assert row["identity"] == spiffe and row["cert_expires_at"] == doc["expires_at"]


def test_certificates_only_for_the_pods_own_identity(start: Callable[..., tuple[str, bytes]]) -> None:
    base, key = start("--workload-cert-ttl", "600")
    pod = Pod(base, key, "backend-0")
    csr = csr_for([])
    url = f"{base}/v1/certs/{pod.node_id}"
    assert requests.post(url, json={"csr": csr}, timeout=5).status_code == 401
    other = identity.mint(key, identity.Claims("shop", "backend-sa", "backend-1"))
    answer = requests.post(url, json={"csr": csr}, headers={"Authorization": f"Bearer {other}"}, timeout=5)
    assert answer.status_code == 403
    assert pod.certify("not a csr").status_code == 400
    assert "'csr'" in pod.http.post(url, json={}, timeout=5).json()["error"]
    answer = pod.certify(csr)
    cert = x509.load_pem_x509_certificate(answer.json()["cert_chain"][0].encode())
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(seconds=600)


def test_the_root_is_kept_in_the_data_dir(start: Callable[..., tuple[str, bytes]], tmp_path: Path) -> None:
    base, key = start()
    first = Pod(base, key, "backend-0").certify(csr_for([])).json()["root_cert"]
    base, key = start()  # a second control plane on the same data dir
    assert Pod(base, key, "backend-0").certify(csr_for([])).json()["root_cert"] == first
    assert (tmp_path / "control-data" / "ca" / "root-key.pem").stat().st_mode & 0o077 == 0


def _ca(name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, Any] | None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def test_plugged_in_ca_in_istiods_cacerts_layout(
    start: Callable[..., tuple[str, bytes]], tmp_path: Path
) -> None:
    root_key, inter_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _ca("corp root", root_key, None)
    inter = _ca("mesh intermediate", inter_key, (root.subject, root_key))
    cacerts = tmp_path / "cacerts"
    cacerts.mkdir()
    pem = serialization.Encoding.PEM
    (cacerts / "root-cert.pem").write_bytes(root.public_bytes(pem))
    (cacerts / "ca-cert.pem").write_bytes(inter.public_bytes(pem))
    (cacerts / "cert-chain.pem").write_bytes(inter.public_bytes(pem) + root.public_bytes(pem))
    (cacerts / "ca-key.pem").write_bytes(
        inter_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    base, key = start("--cacerts", str(cacerts))
    doc = Pod(base, key, "backend-0").certify(csr_for([])).json()
    assert doc["root_cert"] == root.public_bytes(pem).decode()
    files = {}
    for name, text in (
        ("leaf", doc["cert_chain"][0]),
        ("inter", doc["cert_chain"][1]),
        ("root", doc["root_cert"]),
    ):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(text)
    out = openssl(
        "verify", "-CAfile", str(files["root"]), "-untrusted", str(files["inter"]), str(files["leaf"])
    )
    assert out.strip().endswith("OK")
    assert "mesh intermediate" in openssl("x509", "-in", str(files["leaf"]), "-noout", "-issuer")


def test_the_api_over_tls_with_a_certificate_from_the_ca(
    start: Callable[..., tuple[str, bytes]], meshtrace_process: Any, tmp_path: Path
) -> None:
    # (the `start` fixture wrote mesh.yaml; this control plane also listens with TLS)
    proc = meshtrace_process(
        ["control", "-f", str(tmp_path / "mesh.yaml"), "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "control-data"), "--tls-listen", "127.0.0.1:0"]
    )  # fmt: skip
    tls_base = "https://{}:{}".format(*proc.wait_for_listeners("control-tls")["control-tls"])
    root = tmp_path / "control-data" / "ca" / "root-cert.pem"
    # verified against the mesh root, with the listen address as the host name
    assert requests.get(f"{tls_base}/v1/status", verify=str(root), timeout=5).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_base}/v1/status", timeout=5)  # the system roots do not know it
    answer = requests.post(f"{tls_base}/v1/register", json={}, verify=str(root), timeout=5)
    assert answer.status_code == 401  # TLS does not replace the credential
    host, port = tls_base.removeprefix("https://").rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)))
    (tmp_path / "control.pem").write_text(pem)
    text = openssl("x509", "-in", str(tmp_path / "control.pem"), "-noout", "-ext", "subjectAltName")
    assert "URI:spiffe://cluster.local/ns/istio-system/sa/istiod" in text and "IP Address:127.0.0.1" in text
