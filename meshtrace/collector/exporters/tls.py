"""`tls` settings shared by the otlp_grpc and otlp_http exporters (the Collector's configtls)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TLSConfig:
    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name_override: str = ""
    min_version: str = ""
    max_version: str = ""


def read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()
