"""The W3C Trace Context validation suite through the mesh: harness -> inbound sidecar -> an app
on the meshtrace SDK -> the same pod's outbound sidecar -> harness, every hop a real process.

The harness is the W3C working group's test tool (../shared/w3c-trace-context, not project code):
it sends `traceparent`/`tracestate` cases to the service and checks what the service's callbacks
carry. All 40 Level 1 cases must pass (STRICT_LEVEL=2: the tracestate grammar and limits too).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED

HERE = Path(__file__).resolve().parent
LEVEL1_CASES = 40


@pytest.fixture
def w3c_harness() -> Path:
    script = SHARED / "w3c-trace-context" / "test" / "test.py"
    if not script.is_file():
        pytest.skip(f"W3C trace-context harness not found at {script} (../shared/w3c-trace-context)")
    return script


def test_w3c_trace_context_suite_through_the_mesh(
    w3c_harness: Path, harness: Any, meshtrace_process: Any, servers: Any, tmp_path: Path
) -> None:
    ip, outside = harness.loopback(), harness.loopback()
    rx, _ = harness.otlp_receiver(outside)  # where the sidecar and the app send spans
    servers(rx)
    endpoint = f"http://{outside}:{rx.port}"
    app_port = harness.free_port(ip)
    doc = harness.config_doc("w3capp", endpoint)
    sidecar = harness.start_sidecar(meshtrace_process, tmp_path, "w3capp", ip, app_port, doc)
    app = meshtrace_process(
        [],
        module="w3c_test_app",
        cwd=HERE,
        env={
            "POD_IP": ip,
            "PORT": str(app_port),
            "HTTP_PROXY": f"http://{sidecar.address('outbound')}",
            "NO_PROXY": outside,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "w3capp",
        },
    )
    app.wait_for_listeners("w3c-test-app")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        {
            "HARNESS_HOST": outside,
            "HARNESS_PORT": str(harness.free_port(outside)),
            "STRICT_LEVEL": "2",
            "SPEC_LEVEL": "1",
        }
    )
    service = f"http://{sidecar.address('inbound')}/test"
    run = subprocess.run(
        [sys.executable, str(w3c_harness), service],
        cwd=w3c_harness.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = run.stdout + run.stderr
    outcomes = re.findall(r" \.\.\. (ok|FAIL|ERROR|skipped)", report)
    failed = re.findall(r"^(?:FAIL|ERROR): (test_\w+)", report, re.MULTILINE)
    assert not failed and run.returncode == 0, f"failed: {failed}\n{report}"
    assert outcomes.count("ok") == LEVEL1_CASES, report
