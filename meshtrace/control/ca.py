"""The control plane's certificate authority (istiod's role): signs workload CSRs with the
workload's SPIFFE id as the only subject alternative name.

The signing key is either a root generated on first start and kept in the data dir
(`ca/root-cert.pem`, `ca/root-key.pem`, 0600: istiod's self-signed `istio-ca-secret`), or a
plugged-in CA read from a folder in istiod's `cacerts` layout: `ca-cert.pem` (the signing,
usually intermediate, certificate), `ca-key.pem`, `root-cert.pem`, `cert-chain.pem` (the signing
certificate up to the root). All cryptography is the `cryptography` package's.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_TTL = datetime.timedelta(days=3650)  # istiod's self-signed root: 10 years
CONTROL_CERT_TTL = datetime.timedelta(days=365)
CLOCK_SKEW = datetime.timedelta(minutes=1)  # a peer whose clock is a little behind still accepts
PLUGGED_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")

SigningKey = ec.EllipticCurvePrivateKey


class CsrError(ValueError):
    """A CSR that does not parse or whose signature does not verify (HTTP 400)."""


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _load_key(data: bytes, where: Path) -> SigningKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{where}: only EC signing keys are supported")
    return key


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


@dataclass
class CertificateAuthority:
    signer: x509.Certificate
    key: SigningKey
    chain: list[x509.Certificate]  # signer up to the root (just the root when self-signed)
    source: str  # "self-signed (DIR)" or "plugged-in (DIR)": shown in status and logs

    @property
    def root_pem(self) -> str:
        return _pem(self.chain[-1])

    @classmethod
    def self_signed(cls, folder: Path, trust_domain: str) -> CertificateAuthority:
        """The root in `folder`, generated (EC P-256, 10 years) on first start."""
        cert_path, key_path = folder / "root-cert.pem", folder / "root-key.pem"
        if not cert_path.exists():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                    x509.NameAttribute(NameOID.COMMON_NAME, "meshtrace root CA"),
                ]
            )
            now = datetime.datetime.now(datetime.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW)
                .not_valid_after(now + ROOT_TTL)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(_ca_usage(), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )
            _write_private(
                key_path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cls(cert, _load_key(key_path.read_bytes(), key_path), [cert], f"self-signed ({folder})")

    @classmethod
    def plugged(cls, folder: Path) -> CertificateAuthority:
        """A CA from istiod's `cacerts` files; raises ValueError naming a missing or bad file."""
        missing = [name for name in PLUGGED_FILES if not (folder / name).is_file()]
        if missing:
            raise ValueError(f"{folder}: missing {', '.join(missing)} (istiod's cacerts layout)")
        signer = x509.load_pem_x509_certificate((folder / "ca-cert.pem").read_bytes())
        key = _load_key((folder / "ca-key.pem").read_bytes(), folder / "ca-key.pem")
        chain = x509.load_pem_x509_certificates((folder / "cert-chain.pem").read_bytes())
        root = x509.load_pem_x509_certificate((folder / "root-cert.pem").read_bytes())
        if chain[0] != signer:
            chain.insert(0, signer)
        if chain[-1] != root:
            chain.append(root)
        if signer.public_key() != key.public_key():
            raise ValueError(f"{folder}: ca-key.pem is not the key of ca-cert.pem")
        return cls(signer, key, chain, f"plugged-in ({folder})")

    def sign(self, csr_pem: str, spiffe: str, ttl_s: float) -> tuple[list[str], datetime.datetime]:
        """The workload certificate chain (leaf first, root last) for `spiffe`, and its expiry.
        Whatever names the CSR asks for, the certificate carries only the authenticated identity."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise CsrError(f"field 'csr' is not a PEM certificate request: {exc}") from None
        if not csr.is_signature_valid:
            raise CsrError("field 'csr': the request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CsrError("field 'csr': only EC keys are signed")
        return self.issue(public_key, [x509.UniformResourceIdentifier(spiffe)], ttl_s)

    def issue(
        self, public_key: ec.EllipticCurvePublicKey, names: list[x509.GeneralName], ttl_s: float
    ) -> tuple[list[str], datetime.datetime]:
        """A leaf certificate for `public_key` whose only names are `names`, and its expiry."""
        now = datetime.datetime.now(datetime.UTC)
        expiry = min(now + datetime.timedelta(seconds=ttl_s), self.signer.not_valid_after_utc)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # Istio's workload certificates have an empty subject
            .issuer_name(self.signer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(expiry)
            # an empty subject makes the SAN critical (RFC 5280 4.2.1.6)
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=True,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return [_pem(leaf), *(_pem(c) for c in self.chain)], expiry


def serving_context(ca: CertificateAuthority, spiffe: str, host: str) -> ssl.SSLContext:
    """A TLS server context for the control plane's own API (istiod's 15012): a certificate from
    its CA naming its SPIFFE id and the address it listens on. Valid a year, not rotated."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe)]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    chain, _ = ca.issue(key.public_key(), names, CONTROL_CERT_TTL.total_seconds())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with tempfile.TemporaryDirectory(prefix="meshtrace-control-") as folder:  # 0700; ssl reads files only
        path = Path(folder) / "serving.pem"
        _write_private(path, "".join(chain[:-1]).encode() + key_pem)
        ctx.load_cert_chain(path)
    return ctx


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=False,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def load_authority(data_dir: Path, cacerts: Path | None, trust_domain: str) -> CertificateAuthority:
    return (
        CertificateAuthority.plugged(cacerts)
        if cacerts
        else CertificateAuthority.self_signed(data_dir / "ca", trust_domain)
    )
