"""The control plane's `services` document carries each Service port's protocol as istiod
resolves it (appProtocol, else the name's prefix, else `auto` for detection), from real YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshtrace.control.core import ControlPlane
from meshtrace.control.source import load_snapshot
from meshtrace.document import DocumentError, Service

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: default}
spec:
  selector: {app: shop}
  ports:
  - {name: http-web, port: 80, targetPort: 8080}
  - {name: grpc-api, port: 9090}
  - {name: web, port: 81, appProtocol: http2}
  - {name: http-db, port: 5432, appProtocol: tcp}
  - {name: metrics, port: 9100}
  - {name: db, port: 3306}
  - {name: dns, port: 53, protocol: UDP}
"""


def test_services_carry_the_resolved_protocol(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(SERVICE, encoding="utf-8")
    services = ControlPlane(load_snapshot([tmp_path]), []).services()
    ports = services["shop.default.svc.cluster.local"]["ports"]
    assert {p["name"]: p["protocol"] for p in ports} == {
        "http-web": "http",
        "grpc-api": "grpc",
        "web": "http2",  # appProtocol wins over the name
        "http-db": "tcp",
        "metrics": "auto",  # no known prefix: the sidecar detects
        "db": "tcp",  # a well-known server-first port is never sniffed
        "dns": "udp",
    }
    for spec in services.values():
        Service.from_json(spec, strict=True)  # the contract's producer check


def test_the_contract_refuses_an_unknown_protocol() -> None:
    with pytest.raises(DocumentError) as refused:
        Service.from_json({"ports": [{"port": 1, "protocol": "smtp"}]})
    assert refused.value.path == "ports[0].protocol"
