"""istiod's current Telemetry rules as real sidecar processes apply them: a direction whose
metrics are off (ALL_METRICS disabled for one mode) and a formatter custom tag."""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span


def _apply(proc: Any, doc: dict[str, Any]) -> None:
    """Write `doc` to the sidecar's config file and wait (bounded) until its admin shows it."""
    proc.config_path.write_text(json.dumps(doc))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{proc.address('admin')}/config_dump", timeout=5) as r:
            if json.loads(r.read())["config"] == doc:
                return
        time.sleep(0.1)
    raise TimeoutError(proc.output())


def test_server_metrics_off_and_formatter_tag(mesh_factory: Any) -> None:
    mesh = mesh_factory(100.0)
    tags = {"route": {"formatter": {"value": "%REQ(x-route?:path):6% by %REQ(x-none)%"}}}
    for proc, base in ((mesh.frontend, mesh.frontend_doc), (mesh.backend, mesh.backend_doc)):
        doc = copy.deepcopy(base)
        doc["metrics"] = {
            "enabled": True,
            "client_enabled": True,
            "server_enabled": False,
            "client": {},
            "server": {},
        }
        doc["tracing"]["client"]["custom_tags"] = tags
        _apply(proc, doc)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://{mesh.frontend.address('outbound')}"})
    )
    with opener.open("http://backend:8080/echo", timeout=10) as resp:
        assert resp.status == 200
    # the frontend's outbound (client) reports; the backend's inbound (server) does not
    assert {s.labels["reporter"] for s in mesh.metrics(mesh.frontend)["istio_requests"]} == {"source"}
    assert "istio_requests" not in mesh.metrics(mesh.backend)
    spans = [s for _svc, s in mesh.received.wait(2) if s.kind == Span.SPAN_KIND_CLIENT]
    attrs = {kv.key: kv.value.string_value for kv in spans[0].attributes}
    assert attrs["route"] == "/echo by -"
