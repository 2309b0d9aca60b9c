"""The workload certificate (the SDS role of Istio's pilot-agent): a key generated here, a CSR
the control plane signs, and the two TLS contexts the listeners and the upstream pool use.

The private key never leaves the process: the CSR carries only the public key. `ssl` loads a
certificate and key from files only, so each rotation writes them to a fresh 0600 file in a
0700 folder and removes it as soon as it is loaded. Rotation loads the new certificate into the
same contexts: handshakes from then on present it; established connections keep theirs, so
nothing is dropped. All cryptography is the `cryptography` package's and OpenSSL's via `ssl`.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# Istio's SECRET_GRACE_PERIOD_RATIO: a certificate is renewed once half its lifetime is gone.
GRACE_RATIO = 0.5
# Istio's sidecars speak TLS 1.2+ with these ALPN ids between each other: a client offers the
# HTTP/1.1 list or, for a request that came as HTTP/2, the h2 list (Istio's ALPNInMeshH2); the
# server prefers h2 when offered and takes either.
ALPN = ["istio-http/1.1", "istio", "http/1.1"]
ALPN_H2 = ["istio-h2", "istio", "h2"]
ALPN_SERVER = ["istio-h2", "h2", *ALPN]


class PeerRejected(Exception):
    """The peer's certificate does not name an identity of this mesh (or not the one expected)."""


def uri_sans(peercert: dict[str, Any] | None) -> list[str]:
    """The URI subject alternative names of a verified peer certificate (`getpeercert()`)."""
    if not peercert:
        return []
    return [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]


def peer_principal(peercert: dict[str, Any] | None, trust_domain: str, expect: str | None = None) -> str:
    """The peer's SPIFFE id, checked against the trust domain (and `expect`, the identity a
    client wants the server to have); raises PeerRejected otherwise."""
    sans = [s for s in uri_sans(peercert) if s.startswith("spiffe://")]
    if not sans:
        raise PeerRejected("peer certificate has no SPIFFE id")
    ours = [s for s in sans if s.startswith(f"spiffe://{trust_domain}/")]
    if not ours:
        raise PeerRejected(f"peer identity {sans[0]} is not in trust domain {trust_domain}")
    if expect is not None and expect not in ours:
        raise PeerRejected(f"peer identity {ours[0]} is not the expected {expect}")
    return expect or ours[0]


class WorkloadCerts:
    """The sidecar's key and certificate, and TLS contexts that follow every rotation."""

    def __init__(self) -> None:
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client_h2 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        for ctx, alpn in ((self.server, ALPN_SERVER), (self.client, ALPN), (self.client_h2, ALPN_H2)):
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.verify_mode = ssl.CERT_REQUIRED  # mutual: both sides present a certificate
            ctx.set_alpn_protocols(alpn)
            # peers are checked by SPIFFE id (peer_principal), not by host name
            ctx.check_hostname = False
        self.identity = ""
        self.trust_domain = ""
        self.issued_at = 0.0
        self.expires_at = 0.0
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._roots: set[str] = set()

    @property
    def ready(self) -> bool:
        return bool(self.identity)

    def csr(self) -> str:
        """A CSR for a new key (each rotation gets a new key, as Istio's agent does)."""
        # imported here: a sidecar without a control plane never needs it (~9 MB less RSS)
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP256R1())
        request = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(self._key, hashes.SHA256())
        )
        return request.public_bytes(serialization.Encoding.PEM).decode()

    def install(self, answer: dict[str, Any], now: float | None = None) -> None:
        """Load the control plane's answer to the last `csr()` into both contexts."""
        from cryptography.hazmat.primitives import serialization

        chain, root = answer.get("cert_chain"), answer.get("root_cert")
        if self._key is None or not isinstance(chain, list) or not chain or not isinstance(root, str):
            raise ValueError("certificate answer lacks cert_chain or root_cert")
        key_pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # the leaf and intermediates (the root is the trust anchor, not sent)
        presented = "".join(c for c in chain if c != root)
        with tempfile.TemporaryDirectory(prefix="meshtrace-cert-") as folder:  # created 0700
            path = os.path.join(folder, "cert.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(presented.encode() + key_pem)
            for ctx in (self.server, self.client, self.client_h2):
                ctx.load_cert_chain(path)
        if root not in self._roots:  # a new root (a plugged-in CA) is trusted beside the old one
            for ctx in (self.server, self.client, self.client_h2):
                ctx.load_verify_locations(cadata=root)
            self._roots.add(root)
        self.identity = str(answer.get("identity") or "")
        self.trust_domain = str(answer.get("trust_domain") or "")
        self.issued_at = time.time() if now is None else now
        self.expires_at = float(answer.get("expires_at") or 0.0)

    def renew_in(self, now: float | None = None) -> float:
        """Seconds until the certificate should be renewed (GRACE_RATIO of its lifetime)."""
        now = time.time() if now is None else now
        due = self.issued_at + (self.expires_at - self.issued_at) * GRACE_RATIO
        return max(0.0, due - now)


CONTROL_IDENTITY_SUFFIX = "/sa/istiod"  # the control plane's certificate names istiod's identity


def control_plane_tls(ca_root: str) -> tuple[ssl.SSLContext, Callable[[Any], None]]:
    """A client context for the control plane's TLS API, trusting the mesh root in `ca_root`
    (Istio mounts it from the `istio-ca-root-cert` ConfigMap), and a check that the server's
    certificate names the control plane's SPIFFE id."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # checked by SPIFFE id below
    ctx.load_verify_locations(cafile=ca_root)

    def check(wire: Any) -> None:
        from meshtrace.sidecar.backend import ConnectFailure

        sans = uri_sans(wire.get_extra_info("peercert"))
        if not any(s.startswith("spiffe://") and s.endswith(CONTROL_IDENTITY_SUFFIX) for s in sans):
            raise ConnectFailure(f"control plane certificate names {sans or 'no SPIFFE id'}, not istiod")

    return ctx, check
