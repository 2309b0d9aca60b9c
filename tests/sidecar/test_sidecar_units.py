"""The sidecar's sans-IO cores: HTTP/1.1 parsing rules, config validation,
metric labels and span building."""

from __future__ import annotations

from typing import Any

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from meshtrace.sidecar.config import ConfigError, parse
from meshtrace.sidecar.http1 import (
    Data,
    EndOfMessage,
    HttpError,
    RequestHead,
    RequestParser,
    ResponseParser,
    split_target,
)
from meshtrace.sidecar.metrics import IstioMetrics, Observation, peer_metadata
from meshtrace.sidecar.proxy import via_names
from meshtrace.sidecar.tracing import SpanRecord, build_span, custom_tag_values, format_value


def events(data: bytes, *more: bytes) -> list[object]:
    p = RequestParser()
    p.feed(data)
    for m in more:
        p.feed(m)
    return list(p.events)


def test_request_head_and_chunked_body() -> None:
    ev = events(
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", b"0\r\n\r\n"
    )
    head = ev[0]
    assert isinstance(head, RequestHead)
    assert head.method == "POST" and head.target == "/x" and head.chunked and head.keep_alive
    assert ev[1:] == [Data(b"abc"), EndOfMessage()]


def test_pipelined_requests_keep_order() -> None:
    ev = events(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    heads = [e.target for e in ev if isinstance(e, RequestHead)]
    assert heads == ["/a", "/b"]


def test_smuggling_is_400() -> None:
    ev = events(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(ev[-1], HttpError) and ev[-1].status == 400


def test_duplicate_content_length_is_400() -> None:
    ev = events(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc")
    assert isinstance(ev[-1], HttpError) and ev[-1].status == 400


def test_headers_over_60k_are_431_even_in_pieces() -> None:
    big = b"X-Big: " + b"a" * 70000 + b"\r\n"
    ev = events(b"GET / HTTP/1.1\r\nHost: a\r\n", big[:30000], big[30000:])
    assert isinstance(ev[-1], HttpError) and ev[-1].status == 431
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(700))
    ev = events(b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert isinstance(ev[-1], HttpError) and ev[-1].status == 431


def test_forwardable_drops_hop_by_hop_and_connection_named() -> None:
    ev = events(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: 5\r\nProxy-Authorization: x\r\nTE: trailers\r\nX-Ok: 2\r\n\r\n"
    )
    head = ev[0]
    assert isinstance(head, RequestHead)
    assert head.forwardable() == [("Host", "a"), ("X-Ok", "2")]


def test_response_parser_skips_nothing_itself() -> None:
    p = ResponseParser()
    p.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    statuses = [getattr(e, "status", None) for e in p.events if not isinstance(e, Data)]
    assert statuses[0] == 100 and 200 in statuses


@pytest.mark.parametrize(
    ("target", "host", "want"),
    [
        ("http://backend:8080/x?y=1", None, ("backend", 8080, "/x?y=1")),
        ("http://Backend.Default", None, ("backend.default", None, "/")),
        ("http://backend?q", None, ("backend", None, "/?q")),
        ("/x", "backend.default.svc.cluster.local:9000", ("backend.default.svc.cluster.local", 9000, "/x")),
        ("/x", "[::1]:80", ("::1", 80, "/x")),
    ],
)
def test_split_target(target: str, host: str | None, want: tuple[str, int | None, str]) -> None:
    assert split_target(target, host) == want


@pytest.mark.parametrize(("target", "host"), [("/x", None), ("/x", "a:99999"), ("https://a/", None)])
def test_split_target_errors(target: str, host: str | None) -> None:
    with pytest.raises(HttpError) as err:
        split_target(target, host)
    assert err.value.status == 400


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=2048), st.integers(min_value=1, max_value=64))
def test_fuzz_request_parser_never_raises(data: bytes, cut: int) -> None:
    p = RequestParser()
    for i in range(0, len(data), cut):
        p.feed(data[i : i + cut])
    for e in p.events:
        assert isinstance(e, RequestHead | HttpError | Data | EndOfMessage)


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(_token, _value), max_size=20), st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
def test_fuzz_valid_heads_roundtrip(headers: list[tuple[str, str]], method: str) -> None:
    raw = f"{method} /p HTTP/1.1\r\nHost: h\r\n".encode()
    # framing, a second Host and Upgrade have their own answers (tested below)
    refused = ("content-length", "transfer-encoding", "host", "upgrade")
    headers = [(k, v.strip()) for k, v in headers if k.lower() not in refused]
    raw += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n"
    ev = events(raw)
    head = ev[0]
    assert isinstance(head, RequestHead), ev
    assert head.method == method
    assert head.headers[1:] == headers


def doc(**tracing: Any) -> dict[str, Any]:
    block = {
        "enabled": True,
        "provider": {"name": "p", "protocol": "http", "endpoint": "http://127.0.0.1:1"},
        "random_sampling_percentage": 10.0,
        **tracing,
    }
    return {
        "tracing": {"client": block, "server": block},
        "workload": {"labels": {"app": "fe", "version": "v3"}},
    }


def test_config_parse_defaults_and_identity() -> None:
    cfg = parse(doc(), "7", "frontend", "shop", {"team": "x"})
    assert cfg.workload.service_name == "fe.shop"
    assert cfg.workload.canonical_revision == "v3"
    assert cfg.client.sampling == 10.0 and cfg.client.reports
    assert cfg.client.write == ("w3c", "b3")


@pytest.mark.parametrize(
    ("tracing", "field"),
    [
        ({"random_sampling_percentage": 101}, "random_sampling_percentage"),
        ({"random_sampling_percentage": "x"}, "random_sampling_percentage"),
        ({"custom_tags": {"t": {"literal": {}, "header": {}}}}, "custom_tags.t"),
        ({"propagation": {"write": ["jaeger"]}}, "propagation"),
        ({"provider": {"protocol": "thrift"}}, "provider.protocol"),
    ],
)
def test_config_errors_name_the_field(tracing: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse(doc(**tracing), "1", "w", "default", {})


def test_bad_tag_override_drops_its_label_not_the_config(caplog: pytest.LogCaptureFixture) -> None:
    # Envoy's stats filter logs an expression it cannot parse and drops that label; the push
    # applies. Before, one bad value refused the whole config (NACK), and `||` was refused too.
    d = doc()
    d["metrics"] = {
        "client": {
            "REQUEST_COUNT": {
                "tag_overrides": {
                    "x": {"value": "request.host +"},
                    "destination_service_name": {"value": "request.host | destination.service.name"},
                    "either": {"value": "response.code == 200 || request.missing"},
                    "request_host": {"value": "request.host"},
                }
            }
        }
    }
    cfg = parse(d, "1", "frontend", "default", {})
    assert "tag_overrides.x.value" in caplog.text and "dropped" in caplog.text
    m = IstioMetrics()
    m.configure(cfg)
    m.record(observation())
    (count,) = scrape(m)["istio_requests"]
    assert "x" not in count.labels
    assert "destination_service_name" not in count.labels  # Mixer `|` is not CEL: dropped as Envoy does
    assert count.labels["either"] == "true"
    assert count.labels["request_host"] == "backend:8080"


def test_registry_names() -> None:
    d = doc()
    d["services"] = {
        "backend.default.svc.cluster.local": {
            "ports": [{"port": 8080}],
            "endpoints": [{"ip": "127.0.0.9", "port": 1}],
        },
        "backend.other.svc.cluster.local": {"ports": [{"port": 8080}], "endpoints": []},
    }
    reg = parse(d, "1", "w", "default", {}).registry
    for name in ("backend", "backend.default", "backend.default.svc", "backend.default.svc.cluster.local"):
        found = reg.lookup(name)
        assert found is not None and found.namespace == "default"
    other = reg.lookup("backend.other")
    assert other is not None and other.pick() is None
    assert reg.lookup("nothing") is None


def observation(**kw: Any) -> Observation:
    base: dict[str, Any] = {
        "outbound": True,
        "peer_raw": None,
        "peer_principal": "",
        "service_fqdn": "backend.default.svc.cluster.local",
        "service_name": "backend",
        "service_namespace": "default",
        "port": 8080,
        "host": "backend:8080",
        "status": 200,
        "flags": "-",
        "duration_ms": 3.0,
        "request_bytes": 100,
        "response_bytes": 200,
    }
    base.update(kw)
    return Observation(**base)


def scrape(m: IstioMetrics) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families("\n".join(m.exposition()) + "\n"):
        out.setdefault(fam.name, []).extend(fam.samples)
    return out


def test_metrics_labels_peer_and_overrides() -> None:
    d = doc()
    d["metrics"] = {
        "client": {
            "REQUEST_COUNT": {
                "tag_overrides": {
                    "request_host": {"operation": "UPSERT", "value": "request.host"},
                    "destination_version": {"operation": "REMOVE"},
                }
            },
            "REQUEST_SIZE": {"disabled": True},
        }
    }
    cfg = parse(d, "1", "frontend", "default", {})
    be = parse(doc(), "1", "backend", "default", {"app": "backend", "version": "v2"})
    m = IstioMetrics()
    m.configure(cfg)
    peer = peer_metadata(be, "sidecar~x", "backend-0")
    m.record(observation(peer_raw=peer))
    m.record(observation(peer_raw=peer, duration_ms=700))
    got = scrape(m)
    (count,) = got["istio_requests"]
    assert count.value == 2
    assert count.labels["request_host"] == "backend:8080"
    assert "destination_version" not in count.labels
    assert count.labels["destination_workload"] == "backend"
    assert count.labels["destination_app"] == "fe"  # doc() labels win over the command line's
    assert count.labels["source_workload"] == "frontend"
    assert "istio_request_bytes" not in got
    durations = {
        float(s.labels["le"]): s.value for s in got["istio_request_duration_milliseconds"] if "le" in s.labels
    }
    assert durations[5.0] == 1 and durations[1000.0] == 2 and durations[float("inf")] == 2


@settings(max_examples=examples(300), deadline=None)
@given(
    st.text(alphabet="%REQ():?-ab:0123456789 ", max_size=60),
    st.dictionaries(st.sampled_from(["a", "b", "-", ":path"]), st.text(max_size=20), max_size=3),
)
def test_fuzz_formatter_never_raises(template: str, headers: dict[str, str]) -> None:
    out = format_value(template, headers)
    assert isinstance(out, str)
    if "%" not in template:
        assert out == template  # text outside commands is kept as written


@pytest.mark.parametrize(("client", "server"), [(False, True), (True, False), (True, True)])
def test_metrics_per_direction(client: bool, server: bool) -> None:
    d = doc()
    d["metrics"] = {"enabled": True, "client_enabled": client, "server_enabled": server}
    m = IstioMetrics()
    m.configure(parse(d, "1", "frontend", "default", {}))
    m.record(observation(outbound=True))
    m.record(observation(outbound=False))
    reporters = sorted(s.labels["reporter"] for s in scrape(m).get("istio_requests", []))
    assert reporters == [r for r, on in (("destination", server), ("source", client)) if on]


def test_span_tags_status_and_custom_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MT_ZONE", "z1")
    tags = {
        "env": {"literal": {"value": "prod"}},
        "zone_env": {"environment": {"name": "MT_ZONE"}},
        "missing_env": {"environment": {"name": "MT_NOPE", "default_value": "dflt"}},
        "user": {"header": {"name": "X-User"}},
        "nobody": {"header": {"name": "x-none"}},
        "fmt": {"formatter": {"value": "u=%REQ(x-none?X-User):3% t=%START_TIME% n=%REQ(x-none)%"}},
    }
    cfg = parse(doc(custom_tags=tags, enable_istio_tags=False, max_path_tag_length=10), "1", "w", "ns", {})
    rec = SpanRecord(
        trace_id=b"t" * 16, span_id=b"s" * 8, parent_span_id=None, name="n", server=True,
        start_ns=1, end_ns=2,
        request_id="r", url="http://a/very/long/path", method="GET", status=404, user_agent="ua",
        peer_address="1.2.3.4", downstream_cluster="-", upstream_cluster="inbound|1||", request_size=0,
        response_size=0, flags="-", headers={"x-user": "alice"},
    )  # fmt: skip
    span = Span.FromString(build_span(rec, cfg.server, cfg, "node"))
    a = {kv.key: kv.value.string_value for kv in span.attributes}
    assert (
        a["env"] == "prod" and a["zone_env"] == "z1" and a["missing_env"] == "dflt" and a["user"] == "alice"
    )
    assert a["fmt"] == "u=ali t=- n=-"  # Envoy's %REQ(a?b):len%; what is not there prints "-"
    assert "nobody" not in a and "istio.mesh_id" not in a and "error" not in a
    assert a["http.url"] == "http://a/v"  # cut to max_path_tag_length
    assert span.kind == Span.SPAN_KIND_SERVER and span.status.code == Status.STATUS_CODE_UNSET
    rec.server = False
    assert Span.FromString(build_span(rec, cfg.client, cfg, "n")).status.code == Status.STATUS_CODE_ERROR
    rec.status = 0
    server_span = Span.FromString(build_span(rec, cfg.client, cfg, "n"))
    assert {kv.key: kv.value.string_value for kv in server_span.attributes}["error"] == "true"
    assert custom_tag_values({}, {}) == []


def test_encoded_span_decodes_as_otlp() -> None:
    cfg = parse(doc(), "1", "w", "ns", {"app": "w"})
    rec = SpanRecord(
        trace_id=bytes(range(16)), span_id=bytes(range(8)), parent_span_id=b"\x01" * 8, name="b:80/*" * 3000,
        server=False, start_ns=1_700_000_000_000_000_001, end_ns=1_700_000_000_000_900_000, request_id="r",
        url="http://b/", method="GET", status=200, user_agent="ua", peer_address="1.2.3.4",
        downstream_cluster="-", upstream_cluster="outbound|80||b", request_size=1, response_size=2,
        flags="-", headers={},
    )  # fmt: skip
    span = Span.FromString(build_span(rec, cfg.client, cfg, "node"))
    assert span.trace_id == bytes(range(16)) and span.parent_span_id == b"\x01" * 8
    assert span.name == "b:80/*" * 3000  # long names use multi-byte lengths
    assert span.kind == Span.SPAN_KIND_CLIENT and span.status.code == Status.STATUS_CODE_UNSET
    assert span.start_time_unix_nano == 1_700_000_000_000_000_001
    assert span.end_time_unix_nano == 1_700_000_000_000_900_000
    a = {kv.key: kv.value.string_value for kv in span.attributes}
    assert (
        a["component"] == "proxy"
        and a["istio.canonical_service"] == "fe"
        and a["upstream_cluster"] == "outbound|80||b"
    )


def test_minted_request_ids_are_uuid4_and_not_traceable() -> None:
    import uuid

    from meshtrace.propagation.request_id import TraceReason, trace_reason
    from meshtrace.sidecar.proxy import _request_id

    ids = {_request_id() for _ in range(500)}
    assert len(ids) == 500
    for rid in ids:
        u = uuid.UUID(rid)
        assert str(u) == rid and u.version == 4 and u.variant == uuid.RFC_4122
        assert trace_reason(rid) is TraceReason.NOT_TRACEABLE


# -- HTTP strictness (issue 10, finding 11): refused before a head is queued, so never forwarded


@pytest.mark.parametrize(
    "host_lines", [b"Host: a\r\nHost: b\r\n", b"Host: a\r\nhost: a\r\n", b"Host: a\r\nX: y\r\nHOST: c\r\n"]
)
def test_second_host_header_is_400(host_lines: bytes) -> None:
    ev = events(b"GET / HTTP/1.1\r\n" + host_lines + b"\r\n")
    assert len(ev) == 1 and isinstance(ev[0], HttpError) and ev[0].status == 400


@pytest.mark.parametrize("coding", [b"xchunked", b"gzip, chunked", b"identity"])
def test_transfer_coding_other_than_chunked_is_501(coding: bytes) -> None:
    ev = events(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + coding + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert len(ev) == 1 and isinstance(ev[0], HttpError) and ev[0].status == 501


def test_chunked_in_any_case_is_still_chunked() -> None:
    ev = events(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert isinstance(ev[0], RequestHead) and ev[0].chunked and ev[1:] == [Data(b"abc"), EndOfMessage()]


@pytest.mark.parametrize(
    ("connection", "upgrade"),
    [
        (b"Connection: Upgrade\r\n", b"h2c"),
        (b"Connection: keep-alive, upgrade\r\n", b"spdy/3"),
        (b"", b"websocket"),  # no `Connection: upgrade`: not an upgrade, yet not a plain GET either
    ],
)
def test_upgrade_is_501_and_no_head_is_queued(connection: bytes, upgrade: bytes) -> None:
    ev = events(b"GET /ws HTTP/1.1\r\nHost: a\r\n" + connection + b"Upgrade: " + upgrade + b"\r\n\r\n")
    assert len(ev) == 1 and isinstance(ev[0], HttpError) and ev[0].status == 501


@pytest.mark.parametrize("connection", [b"Connection: Upgrade\r\n", b"Connection: keep-alive, upgrade\r\n"])
def test_websocket_upgrade_stops_the_parser_and_keeps_the_tunnel_bytes(connection: bytes) -> None:
    p = RequestParser()
    p.feed(b"GET /ws HTTP/1.1\r\nHost: a\r\n" + connection + b"Upgrade: WebSocket\r\n\r\n\x81\x05hello")
    p.feed(b"GET / HTTP/1.1\r\n\r\n")  # tunnel bytes now, never parsed as a request
    assert isinstance(p.events[0], RequestHead) and p.upgraded
    assert p.rest == [b"\x81\x05hello", b"GET / HTTP/1.1\r\n\r\n"]
    assert not any(isinstance(e, HttpError) for e in p.events)


def test_connect_stops_the_parser() -> None:
    p = RequestParser()
    p.feed(b"CONNECT backend:5432 HTTP/1.1\r\nHost: backend:5432\r\n\r\n\x00\x01")
    head = p.events[0]
    assert isinstance(head, RequestHead) and head.method == "CONNECT" and head.target == "backend:5432"
    assert p.upgraded and p.rest == [b"\x00\x01"]


# -- bounded metrics (finding 7)


def test_series_limit_sends_new_label_sets_to_the_overflow_series() -> None:
    m = IstioMetrics(series_limit=3)
    m.configure(parse(doc(), "1", "frontend", "default", {}))
    for i in range(10):
        m.record(observation(service_fqdn=f"10.0.0.{i}", service_name="PassthroughCluster"))
    m.record(observation(service_fqdn="10.0.0.1", service_name="PassthroughCluster"))  # admitted before
    got = scrape(m)
    counts = {s.labels["destination_service"]: s.value for s in got["istio_requests"]}
    assert counts == {"10.0.0.0": 1, "10.0.0.1": 2, "10.0.0.2": 1, "overflow": 7}
    (overflow,) = [s for s in got["istio_requests"] if s.labels["destination_service"] == "overflow"]
    assert overflow.labels["reporter"] == "source" and overflow.labels["response_code"] == "overflow"
    assert m.overflowed == 7
    assert m.series == 4 * 4  # 3 label sets + overflow, in each of the 4 metrics


def test_sweep_evicts_label_sets_idle_for_a_whole_interval() -> None:
    m = IstioMetrics()
    m.configure(parse(doc(), "1", "frontend", "default", {}))
    a, b = observation(service_fqdn="a"), observation(service_fqdn="b")
    m.record(a)
    m.record(b)
    assert m.sweep() == 0  # both used since the start
    m.record(a)
    assert m.sweep() == 4  # b's 4 metrics
    assert {s.labels["destination_service"] for s in scrape(m)["istio_requests"]} == {"a"}
    # used, then the label cache dropped (new config): still counts as used
    m.record(a)
    m.configure(parse(doc(), "2", "frontend", "default", {}))
    assert m.sweep() == 0
    assert m.sweep() == 4 and m.series == 0 and m.evicted == 8
    m.record(a)  # a returning series starts from zero, as Envoy's evicted stats do
    assert [s.value for s in scrape(m)["istio_requests"]] == [1]


# -- loops (finding 8)


@pytest.mark.parametrize(
    ("via", "found"),
    [
        ("1.1 127.0.0.5:15001", True),
        ("1.1 10.0.0.1:80, HTTP/1.1 127.0.0.5:15001 (meshtrace)", True),
        ("1.1 127.0.0.5:1500", False),
        ("1.1 127.0.0.55:15001", False),
        ("127.0.0.5:15001", False),  # no protocol: not a received-by
        ("", False),
    ],
)
def test_via_names(via: str, found: bool) -> None:
    assert via_names(via, "127.0.0.5:15001") is found
    assert not via_names(via, "")


def test_label_values_are_cut_so_a_huge_host_cannot_swell_the_page() -> None:
    m = IstioMetrics(series_limit=5)
    m.configure(parse(doc(), "1", "frontend", "default", {}))
    for i in range(50):
        host = f"{i}" + "h" * 20000
        m.record(observation(service_fqdn=host, host=host, service_name="PassthroughCluster"))
    page = "\n".join(m.exposition())
    assert len(page) < 6 * 70 * 25 * 300  # label sets x lines x labels x cut value
    values = {s.labels["destination_service"] for s in scrape(m)["istio_requests"]}
    assert max(map(len, values)) == 256 and len(values) == 6 and m.overflowed == 45


@settings(max_examples=examples(200), deadline=None)
@given(st.text(max_size=200), st.sampled_from(["1.1", "1.0", "HTTP/1.1"]))
def test_fuzz_via_names_finds_an_appended_entry(via: str, protocol: str) -> None:
    me = "127.0.0.5:15001"
    found = via_names(via, me)  # any header value: an answer, never an exception
    assert via_names(f"{via}, {protocol} {me}", me)
    assert found == via_names(via + ", ", me)
