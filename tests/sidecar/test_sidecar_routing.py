"""Routing as a table: (listener kind, request target, Host) -> the route `routing.resolve` picks,
and the absolute-form targets `http1.split_target` reads with httptools' URL parser. Pure
functions: no sockets."""

from __future__ import annotations

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.sidecar.config import Endpoint, Registry, Service
from meshtrace.sidecar.http1 import HttpError, split_target
from meshtrace.sidecar.routing import (
    BLACKHOLE,
    GATEWAY,
    INBOUND,
    OUTBOUND,
    PASSTHROUGH,
    RETRY_ATTEMPTS,
    LocalInfo,
    LocalReply,
    resolve,
)

BACKEND = "backend.default.svc.cluster.local"
FRONTEND = "frontend.default.svc.cluster.local"


def registry() -> Registry:
    services = {
        BACKEND: Service(
            BACKEND, "backend", "default", (8080, 9090), (Endpoint("10.0.0.2", 8080, "backend-1"),)
        ),
        FRONTEND: Service(
            FRONTEND, "frontend", "default", (80,), (Endpoint("10.0.0.1", 8080, "frontend-1"),)
        ),
        "db.other.svc.cluster.local": Service("db.other.svc.cluster.local", "db", "other", (), ()),
    }
    return Registry(services, "default")


REG = registry()
LOCAL = LocalInfo(
    app_host="127.0.0.1",
    app_port=8080,
    namespace="default",
    own_service=REG.lookup("frontend"),
    own_addresses=frozenset({("10.0.0.1", 15001), ("10.0.0.1", 15006)}),
)
GATEWAY_LOCAL = LocalInfo("127.0.0.1", 8080, "istio-system", default_service="frontend")

# (kind, target, Host) -> (cluster, fixed address, attempts, port, path, authority)
ROUTES = [
    # outbound to a mesh Service: absolute-form (HTTP_PROXY) or origin-form with Host
    (
        OUTBOUND,
        "http://backend/x?y=1",
        None,
        (f"outbound|8080||{BACKEND}", None, RETRY_ATTEMPTS, 8080, "/x?y=1", "backend"),
    ),
    (
        OUTBOUND,
        "/x",
        "backend:9090",
        (f"outbound|9090||{BACKEND}", None, RETRY_ATTEMPTS, 9090, "/x", "backend:9090"),
    ),
    (
        OUTBOUND,
        "/x",
        "backend.default.svc:8080",
        (f"outbound|8080||{BACKEND}", None, 3, 8080, "/x", "backend.default.svc:8080"),
    ),
    # the scheme is case-insensitive: this was routed with the whole string as its path
    (
        OUTBOUND,
        "Http://backend:8080/x",
        "other:1",
        (f"outbound|8080||{BACKEND}", None, 3, 8080, "/x", "other:1"),
    ),
    (
        OUTBOUND,
        "HTTP://Backend:8080",
        None,
        (f"outbound|8080||{BACKEND}", None, 3, 8080, "/", "backend:8080"),
    ),
    # a Service without ports: port 80 and any port
    (
        OUTBOUND,
        "http://db.other/",
        None,
        ("outbound|80||db.other.svc.cluster.local", None, 3, 80, "/", "db.other"),
    ),
    # outside the registry: PassthroughCluster to where it was sent, no retries
    (OUTBOUND, "http://example.com/a", None, (PASSTHROUGH, ("example.com", 80), 1, 80, "/a", "example.com")),
    (OUTBOUND, "/a", "10.9.9.9:81", (PASSTHROUGH, ("10.9.9.9", 81), 1, 81, "/a", "10.9.9.9:81")),
    # to one of this sidecar's own listeners: BlackHoleCluster (it would loop)
    (OUTBOUND, "http://10.0.0.1:15001/", None, (BLACKHOLE, None, 1, 15001, "/", "10.0.0.1:15001")),
    # inbound: always the app; the Service named (else the workload's own) labels it
    (INBOUND, "/x", "backend:8080", ("inbound|8080||", ("127.0.0.1", 8080), 1, 8080, "/x", "backend:8080")),
    (INBOUND, "/x", "10.0.0.1", ("inbound|8080||", ("127.0.0.1", 8080), 1, 8080, "/x", "10.0.0.1")),
    # gateway: a port the Service lacks means its first port; unknown hosts the default Service
    (GATEWAY, "/", "backend:80", (f"outbound|8080||{BACKEND}", None, 3, 8080, "/", "backend:80")),
]


@pytest.mark.parametrize(("kind", "target", "host", "want"), ROUTES)
def test_resolve(kind: str, target: str, host: str | None, want: tuple[object, ...]) -> None:
    route = resolve(kind, target, host, REG, LOCAL)
    got = (route.cluster, route.fixed, route.attempts, route.port, route.path, route.authority)
    assert got == want


@pytest.mark.parametrize(
    ("kind", "target", "host", "svc"),
    [
        (INBOUND, "/", "backend:8080", ("backend", BACKEND, f"{BACKEND}:8080/*")),
        (INBOUND, "/", "10.0.0.1:8080", ("frontend", FRONTEND, f"{FRONTEND}:8080/*")),
        (OUTBOUND, "/", "backend", ("backend", BACKEND, f"{BACKEND}:8080/*")),
        (OUTBOUND, "/", "example.com", (PASSTHROUGH, "example.com", "example.com:80/*")),
        (OUTBOUND, "/", "10.0.0.1:15006", (BLACKHOLE, "10.0.0.1", "10.0.0.1:15006/*")),
    ],
)
def test_resolve_names_the_service(kind: str, target: str, host: str, svc: tuple[str, str, str]) -> None:
    route = resolve(kind, target, host, REG, LOCAL)
    assert (route.svc_name, route.svc_fqdn, route.decorator) == svc


def test_inbound_without_a_known_service_names_the_host() -> None:
    route = resolve(INBOUND, "/", "somewhere:81", REG, LocalInfo("127.0.0.1", 8080, "shop"))
    assert (route.svc_fqdn, route.svc_name, route.svc_namespace, route.port) == (
        "somewhere",
        "somewhere",
        "shop",
        81,
    )


def test_gateway_sends_unknown_hosts_to_its_default_service() -> None:
    route = resolve(GATEWAY, "/", "shop.example.com", REG, GATEWAY_LOCAL)
    assert route.cluster == f"outbound|80||{FRONTEND}" and route.service is not None


@pytest.mark.parametrize(
    ("kind", "target", "host", "status", "flag"),
    [
        (OUTBOUND, "http://backend:7000/", None, 404, "NR"),  # the Service has no such port
        (GATEWAY, "/", "nowhere", 404, "NR"),  # gateway without a default Service
    ],
)
def test_resolve_refusals(kind: str, target: str, host: str | None, status: int, flag: str) -> None:
    with pytest.raises(LocalReply) as err:
        resolve(kind, target, host, REG, LOCAL)
    assert err.value.status == status and err.value.flags == (flag,)


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("/x", None),
        ("/x", ""),
        ("https://backend/", None),
        ("ftp://backend/", "backend"),
        ("http://:80/", None),
    ],
)
def test_resolve_bad_targets_are_400(target: str, host: str | None) -> None:
    with pytest.raises(HttpError) as err:
        resolve(OUTBOUND, target, host, REG, LOCAL)
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("target", "host", "want"),
    [
        ("Http://backend:8080/x", "other:1", ("backend", 8080, "/x")),
        ("hTTp://backend:8080/x", None, ("backend", 8080, "/x")),
        ("HTTP://BACKEND/x?Q=1", None, ("backend", None, "/x?Q=1")),
        ("http://user:pw@backend:81/", None, ("backend", 81, "/")),
        ("http://[::1]:8080/x", None, ("::1", 8080, "/x")),
        ("http://backend/x#frag", None, ("backend", None, "/x#frag")),
        ("*", "backend:80", ("backend", 80, "*")),
    ],
)
def test_split_target_absolute_form(target: str, host: str | None, want: tuple[str, int | None, str]) -> None:
    assert split_target(target, host) == want


@pytest.mark.parametrize(
    "target",
    [
        "HTTPS://backend/",
        "Https://backend/",
        "ftp://backend/x",
        "http://backend:0/",
        "http://backend:99999/",
        "http://a b/",
    ],
)
def test_split_target_absolute_form_errors(target: str) -> None:
    with pytest.raises(HttpError) as err:
        split_target(target, "backend")
    assert err.value.status == 400


_scheme = st.sampled_from(["http", "HTTP", "Http", "hTtP"])
_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).map(
    lambda s: "h" + s
)
_host = st.lists(_label, min_size=1, max_size=4).map(".".join)
_segment = st.text(alphabet="abcdefghijkLMNOP0123456789._~-", max_size=10)
_query = st.text(alphabet="abcdefgh0123456789=&", max_size=20)
_path = st.builds(
    lambda segments, query: "".join("/" + s for s in segments) + ("" if query is None else "?" + query),
    st.lists(_segment, max_size=4),
    st.one_of(st.none(), _query),
)


@settings(max_examples=examples(300), deadline=None)
@given(_scheme, _host, st.one_of(st.none(), st.integers(1, 65535)), _path)
def test_fuzz_absolute_targets_route_by_their_authority(
    scheme: str, host: str, port: int | None, path: str
) -> None:
    authority = host.upper() + (f":{port}" if port else "")
    got = split_target(f"{scheme}://{authority}{path}", "ignored:1")
    want_path = path if path.startswith("/") else "/" + path
    assert got == (host, port, want_path)


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=200), st.one_of(st.none(), st.text(max_size=60)))
def test_fuzz_split_target_answers_400_or_a_route(target: str, host: str | None) -> None:
    try:
        h, port, _ = split_target(target, host)
    except HttpError as exc:
        assert exc.status == 400
    else:
        assert h and (port is None or 0 < port < 65536)
