"""The fault suite, short: each scenario of `meshtrace bench faults` (meshtrace/bench/faults.py) for
a few seconds. Real processes, raw OTLP/gRPC requests, the store's SQLite file read at the end.
Every acknowledged span must be stored (lost == 0) and requests must keep being served."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshtrace.bench import faults

pytestmark = pytest.mark.e2e

RATE = 40.0  # export requests/s of 10 spans


def test_sigkill_of_the_default_collector_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    # Before: a batch processor in front of the store acknowledged spans it only held in memory.
    result = faults.collector_sigkill(tmp_path, 3.0, RATE)
    assert result.acknowledged > 0 and result.lost == 0, result
    assert result.counts["served_after_restart"] > 0, result


def test_sigkill_of_an_agent_in_a_backend_outage_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    # Before: sending_queue.storage was ignored and the in-memory queue died with the agent.
    result = faults.agent_sigkill_in_outage(tmp_path, 4.0, RATE)
    assert result.counts["queued_at_kill"] > 0, result
    assert result.acknowledged > result.counts["queued_at_kill"] and result.lost == 0, result


def test_a_backend_outage_costs_no_span_and_no_request(tmp_path: Path) -> None:
    result = faults.backend_outage(tmp_path, 4.0, RATE)
    assert result.acknowledged > 0 and result.lost == 0, result
    assert result.failed == 0, result  # the agent's persistent queue takes everything meanwhile


def test_a_full_disk_refuses_spans_instead_of_acknowledging_them(tmp_path: Path) -> None:
    result = faults.store_disk_full(tmp_path, 3.0, RATE)
    assert result.failed > 0, result  # the disk did fill up
    assert result.acknowledged > 0 and result.lost == 0, result
    assert result.counts["queries_ok"] > 0 and result.counts["queries_failed"] == 0, result


def test_up_keeps_serving_when_its_control_plane_a_sidecar_and_its_collector_are_killed(
    tmp_path: Path,
) -> None:
    result = faults.mesh_kills(tmp_path, 4.0, RATE)
    assert result.counts["killed"] == 3, result
    # HTTP requests through the ingress: only one in flight through the killed sidecar may fail;
    # later ones fail to connect and the gateway retries them on the other frontend.
    assert result.served > 0 and result.failed <= 1, result
    assert result.acknowledged > 0 and result.lost == 0, result
