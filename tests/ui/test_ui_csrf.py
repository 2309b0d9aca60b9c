"""Cross-site request forgery in a real browser (issue 10, finding 9): a page served from another
origin makes Debian's chromium POST spans to a real `meshtrace collector`'s `/api/import` the three
ways a web page can (a `no-cors` `text/plain` fetch, a `text/plain` form, a JSON fetch); none is
stored. The web UI's own upload (same origin) is covered by test_ui_browser.py."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

FORGED = {"fetch-no-cors": "c5f00000000000000000000000000001", "form": "c5f00000000000000000000000000002"}
FORGED_JSON = "c5f00000000000000000000000000003"

ATTACK = """<!doctype html>
<html><body>
<iframe name="sink"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink"><input id="field"></form>
<script>
const target = new URLSearchParams(location.search).get("target") + "/api/import";
const spans = (id) => ({resourceSpans: [{
  resource: {attributes: [{key: "service.name", value: {stringValue: "forged"}}]},
  scopeSpans: [{spans: [{traceId: id, spanId: "0102030405060708", name: "forged", kind: 2,
    startTimeUnixNano: String(Date.now() * 1e6), endTimeUnixNano: String(Date.now() * 1e6 + 1000)}]}]}]});
window.attack = async (ids) => {
  const out = {};
  // 1. fetch without CORS: the browser sends it without asking, the page cannot read the answer
  await fetch(target, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                       body: JSON.stringify(spans(ids["fetch-no-cors"]))});
  // 2. a JSON fetch: needs a CORS preflight first
  try {
    out.json = (await fetch(target, {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify(spans(ids.json))})).status;
  } catch (e) { out.json = String(e); }
  // 3. a text/plain form whose body is JSON: name + "=" + value
  const text = JSON.stringify(spans(ids.form));
  const field = document.getElementById("field");
  field.name = text.slice(0, -1) + ', "x": "';
  field.value = '"}';
  const form = document.getElementById("form");
  form.action = target;
  form.submit();
  return out;
};
</script></body></html>
"""


class _AttackPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ATTACK.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[str]:
    """A web page on another origin: `localhost:<port 0>` (the collector is on 127.0.0.1)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    thread.join(5)
    server.server_close()


def _stored(base: str, trace_id: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/traces/{trace_id}", timeout=5):
            return True
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return False


def test_a_page_on_another_origin_cannot_write_traces(
    browser: Any, collector: tuple[str, str], attacker: str
) -> None:
    base, _ = collector
    page = browser.new_page()
    page.set_default_timeout(15_000)
    answers: list[tuple[str, int]] = []  # what the collector answered each forged POST
    page.on(
        "response",
        lambda r: answers.append((r.request.method, r.status)) if r.url == base + "/api/import" else None,
    )
    page.goto(f"{attacker}/?target={base}")
    with page.expect_response(lambda r: r.url == base + "/api/import" and r.request.frame.name == "sink"):
        out = page.evaluate("ids => window.attack(ids)", {**FORGED, "json": FORGED_JSON})
    assert "Failed to fetch" in str(out["json"])  # the preflight is not granted: never sent

    deadline = time.monotonic() + 10
    while len(answers) < len(FORGED) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    # both simple POSTs reached the server (so the test can fail) and were refused
    assert answers == [("POST", 403)] * len(FORGED), answers
    stored = {how: _stored(base, trace_id) for how, trace_id in FORGED.items()}
    assert stored == dict.fromkeys(FORGED, False)
    assert not _stored(base, FORGED_JSON)
    with urllib.request.urlopen(f"{base}/api/services", timeout=5) as response:
        assert "forged" not in json.load(response)["data"]
    page.close()
