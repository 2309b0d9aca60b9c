"""Workload identity, sans-IO: SPIFFE ids and the bootstrap credential a sidecar presents to the
control plane (the role of Kubernetes' projected service-account token, which istiod checks with
a TokenReview before it answers a proxy).

The credential is `v1.<claims>.<signature>`: base64url JSON claims `{ns, sa, pod, aud, iat}`
signed with HMAC-SHA256 under a key kept in the control plane's data dir (`token-key`, mode 0600).
Whoever holds the key mints credentials: the control plane itself and `meshtrace up`, which plays
the Kubernetes API server handing each pod its token. The standard library's `hmac` does the
signing; nothing here is hand-written cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

AUDIENCE = "meshtrace-control"  # istiod's tokens carry the audience "istio-ca"
KEY_FILE = "token-key"
DEFAULT_SERVICE_ACCOUNT = "default"
DEFAULT_TRUST_DOMAIN = "cluster.local"


class InvalidCredential(ValueError):
    """A credential that does not verify (HTTP 401)."""


@dataclass(frozen=True)
class Claims:
    namespace: str
    service_account: str
    pod: str

    def spiffe_id(self, trust_domain: str) -> str:
        return spiffe_id(trust_domain, self.namespace, self.service_account)


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio's workload identity: spiffe://<trust domain>/ns/<namespace>/sa/<service account>."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse_spiffe_id(uri: str) -> tuple[str, str, str] | None:
    """(trust domain, namespace, service account) of an Istio SPIFFE id, None for anything else."""
    if not uri.startswith("spiffe://"):
        return None
    parts = uri[len("spiffe://") :].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts[i] for i in (0, 2, 4)):
        return None
    return parts[0], parts[2], parts[4]


def load_or_create_key(data_dir: Path) -> bytes:
    """The signing key in `data_dir`, created (32 random bytes, mode 0600) on first use."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 32:
            raise ValueError(f"{path}: signing key shorter than 32 bytes") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as file:
        file.write(key)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(key: bytes, claims: Claims, now: float | None = None) -> str:
    body = {
        "ns": claims.namespace,
        "sa": claims.service_account,
        "pod": claims.pod,
        "aud": AUDIENCE,
        "iat": int(time.time() if now is None else now),
    }
    payload = _b64(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    signature = hmac.new(key, f"v1.{payload}".encode(), hashlib.sha256).digest()
    return f"v1.{payload}.{_b64(signature)}"


def verify(key: bytes, token: str) -> Claims:
    version, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    if version != "v1" or not payload or not signature:
        raise InvalidCredential("credential is not a meshtrace bootstrap token")
    expected = hmac.new(key, f"v1.{payload}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(signature)
        body = json.loads(_unb64(payload))
    except (ValueError, UnicodeDecodeError):
        raise InvalidCredential("credential is malformed") from None
    if not hmac.compare_digest(expected, given):
        raise InvalidCredential("credential signature does not verify")
    if not isinstance(body, dict) or body.get("aud") != AUDIENCE:
        raise InvalidCredential(f"credential audience is not {AUDIENCE!r}")
    namespace, service_account, pod = (body.get(name) for name in ("ns", "sa", "pod"))
    if not (isinstance(namespace, str) and isinstance(service_account, str) and isinstance(pod, str)):
        raise InvalidCredential("credential lacks ns, sa or pod")
    if not (namespace and service_account and pod):
        raise InvalidCredential("credential has an empty ns, sa or pod")
    return Claims(namespace, service_account, pod)


def write_token(path: Path, token: str) -> None:
    """A token file readable by its owner only (a projected token's volume is the pod's alone)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token)
