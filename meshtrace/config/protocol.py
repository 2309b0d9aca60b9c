"""Istio's protocol selection for a Service port, as istiod does it (pkg/config/protocol `Parse`,
pkg/config/kube `ConvertProtocol`): the port's `appProtocol`, else its name's prefix
(`<protocol>[-<suffix>]`), else automatic detection by the sidecar. The result travels in the
config document as each port's `protocol` (docs/config-document.md)."""

from __future__ import annotations

from typing import Final, cast

from meshtrace.document import PortProtocol

# Istio's protocol.Instance names, by the lowercase word `Parse` accepts.
INSTANCES: Final = {
    "tcp": "TCP",
    "udp": "UDP",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "http": "HTTP",
    "http_proxy": "HTTP_PROXY",
    "http2": "HTTP2",
    "https": "HTTPS",
    "tls": "TLS",
    "mongo": "Mongo",
    "redis": "Redis",
    "mysql": "MySQL",
}
UNSUPPORTED: Final = "UnsupportedProtocol"
# The document's word for UnsupportedProtocol: the sidecar detects the protocol per connection.
AUTO: Final = "auto"
# Values a port's `protocol` takes in the document: Parse's words, and `auto` (the contract's
# PortProtocol; a test holds the two equal).
DOCUMENT_VALUES: Final = (*INSTANCES, AUTO)
# Ports istiod never sniffs (SMTP, DNS, MySQL, MongoDB): server-first protocols that detection
# would stall, so an unnamed port there is TCP.
WELL_KNOWN_TCP_PORTS: Final = frozenset({25, 53, 3306, 27017})
_GRPC_WEB: Final = "grpc-web"
# Instance.IsHTTP: the protocols Envoy serves with its HTTP connection manager.
HTTP_INSTANCES: Final = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web"})


def parse(name: str) -> str:
    """Istio's `protocol.Parse`: the Instance for a protocol word, case-insensitively;
    UnsupportedProtocol for anything else (the empty string included)."""
    return INSTANCES.get(name.lower(), UNSUPPORTED)


def convert(port: int, name: str, k8s_protocol: str = "TCP", app_protocol: str | None = None) -> str:
    """Istio's `ConvertProtocol`: a UDP Service port is UDP; otherwise `appProtocol` when set,
    else the port name, read up to its first `-` (`grpc-web` counts whole, before that cut);
    an unsupported word on a well-known server-first port is TCP."""
    if k8s_protocol.upper() == "UDP":
        return INSTANCES["udp"]
    word = name if app_protocol is None else app_protocol
    if word[: len(_GRPC_WEB)].lower() == _GRPC_WEB:
        return INSTANCES[_GRPC_WEB]
    found = parse(word.split("-", 1)[0])
    if found == UNSUPPORTED and port in WELL_KNOWN_TCP_PORTS:
        return INSTANCES["tcp"]
    return found


def is_http(instance: str) -> bool:
    return instance in HTTP_INSTANCES


def document_value(instance: str) -> str:
    """The lowercase word the config document carries for an Instance (`auto` when unsupported)."""
    return AUTO if instance == UNSUPPORTED else instance.lower()


def port_protocol(
    port: int, name: str, k8s_protocol: str = "TCP", app_protocol: str | None = None
) -> PortProtocol:
    """The document's `protocol` of one Service port."""
    # every Instance's word is a PortProtocol (tests/sidecar/test_sidecar_protocols.py holds
    # DOCUMENT_VALUES and the contract equal)
    return cast(PortProtocol, document_value(convert(port, name, k8s_protocol, app_protocol)))
