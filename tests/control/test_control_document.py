"""Every document the control plane serves follows the config document contract exactly
(meshtrace/document/contract.py): resolution's part, and the `services`, provider endpoints and
identity the control plane adds."""

from __future__ import annotations

from pathlib import Path

from meshtrace.control.core import ControlPlane, parse_registration, parse_static_endpoint
from meshtrace.control.source import load_snapshot
from meshtrace.document import Document

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"
NAMED_TARGET = """
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def _register(plane: ControlPlane, workload: str, ip: str, mode: str = "sidecar") -> None:
    ports = {"inbound": 15006, "outbound": 15001, "admin": 15000, "app": 8080}
    body = {"workload": workload, "namespace": "default", "pod": f"{workload}-0", "ip": ip}
    plane.register(
        parse_registration({**body, "labels": {"app": workload}, "ports": ports, "mode": mode}), 0.0
    )


def test_served_documents_follow_the_contract(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(NAMED_TARGET)
    snapshot = load_snapshot([SEED, tmp_path])
    plane = ControlPlane(snapshot, [parse_static_endpoint("db.example=127.0.0.9:5432")])
    for workload, ip in (("frontend", "127.0.1.2"), ("backend", "127.0.1.3"), ("api", "127.0.1.4")):
        _register(plane, workload, ip)
    _register(plane, "istio-ingressgateway", "127.0.0.1", "gateway")
    plane.render_all()
    for node in plane.nodes.values():
        assert node.config is not None
        assert Document.from_json(node.config, strict=True).to_json() == node.config
    services = next(iter(plane.nodes.values())).config["services"]
    assert services["api.default.svc.cluster.local"]["ports"][0]["target_port"] == "http"
    assert services["db.example"]["static"] is True
