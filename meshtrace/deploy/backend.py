"""`render --backend`: the trace store the collector exports to, rendered with it.

- `jaeger`: Jaeger v2 (a Collector distribution: OTLP in, `jaeger_storage_exporter`, the query UI
  as the `jaeger_query` extension), configured as upstream's `cmd/jaeger/config-<storage>.yaml`,
  on a production storage named by `--backend-storage` (elasticsearch, opensearch or cassandra;
  the storage cluster itself is not rendered: its address is a value to review). Services
  `jaeger-collector` (OTLP, the name the guide's exporter uses) and `jaeger-query` (UI, the name
  its port-forward uses) in `observability`.
- `tempo`: Grafana Tempo in single-binary mode (OTLP in, query on 3200), local storage on a
  PersistentVolumeClaim.
- `external=HOST:PORT`: an OTLP/gRPC endpoint outside the output.

The collector gets an `otlp_grpc` exporter to the backend unless one already points there, and
Grafana gets the backend as a data source (a ConfigMap labelled `grafana_datasource: "1"`, what
the Grafana Helm chart's sidecar loads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshtrace.deploy import kube
from meshtrace.deploy.collector import Rendered
from meshtrace.deploy.collector_config import component_type, pipelines
from meshtrace.deploy.manifest import Manifest, dump

NAMESPACE = "observability"
JAEGER_IMAGE = "jaegertracing/jaeger:2.20.0"
TEMPO_IMAGE = "grafana/tempo:2.10.8"
TEMPO_UID = 10001  # the user the Tempo image runs as: the volume must be writable by it
JAEGER_STORAGES = ("elasticsearch", "opensearch", "cassandra")
STORAGE_SERVERS = {
    "elasticsearch": "http://elasticsearch.observability.svc.cluster.local:9200",
    "opensearch": "http://opensearch.observability.svc.cluster.local:9200",
    "cassandra": "cassandra.observability.svc.cluster.local:9042",
}
OTLP_GRPC, OTLP_HTTP, JAEGER_UI, TEMPO_HTTP, HEALTH = 4317, 4318, 16686, 3200, 13133
EXPORTER = "otlp_grpc/backend"


@dataclass
class Backend:
    files: dict[str, list[Manifest]] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    endpoint: str = ""  # host:port the collector sends to
    config: dict[str, Any] = field(default_factory=dict)  # the backend's own config (checked by tests)


def parse(value: str) -> tuple[str, str]:
    """`jaeger`, `tempo` or `external=HOST:PORT` -> (kind, endpoint or ""); ValueError otherwise."""
    if value in ("jaeger", "tempo"):
        return value, ""
    kind, _, endpoint = value.partition("=")
    host, _, port = endpoint.rpartition(":")
    if kind == "external" and host and port.isdigit() and 0 < int(port) < 65536:
        return kind, endpoint
    raise ValueError(f"{value!r}: expected jaeger, tempo or external=HOST:PORT")


def _jaeger_config(storage: str) -> dict[str, Any]:
    if storage == "cassandra":
        backend: dict[str, Any] = {
            "cassandra": {
                "schema": {"keyspace": "jaeger_v1_dc1"},
                "connection": {"servers": [STORAGE_SERVERS[storage]]},
            }
        }
    else:
        spans = {"date_layout": "2006-01-02", "rollover_frequency": "day", "shards": 5, "replicas": 1}
        backend = {
            storage: {
                "server_urls": [STORAGE_SERVERS[storage]],
                "indices": {"index_prefix": "jaeger-main", "spans": spans, "services": dict(spans)},
            }
        }
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"0.0.0.0:{HEALTH}"}},
            "jaeger_query": {"storage": {"traces": "main_store"}},
            "jaeger_storage": {"backends": {"main_store": backend}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "main_store"}},
    }


def _tempo_config() -> dict[str, Any]:
    return {
        "server": {"http_listen_port": TEMPO_HTTP},
        "distributor": {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC}"},
                        "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP}"},
                    }
                }
            }
        },
        "storage": {
            "trace": {
                "backend": "local",
                "local": {"path": "/var/tempo/traces"},
                "wal": {"path": "/var/tempo/wal"},
            }
        },
    }


def _config_map(name: str, config: dict[str, Any]) -> Manifest:
    return Manifest(
        kube.config_map(f"{name}-config", NAMESPACE, {"app": name}, {"config.yaml": dump(config)})
    )


def _deployment(name: str, image: str, args: list[str], ports: list[int], probe: dict[str, Any]) -> Manifest:
    """One replica reading its config from `<name>-config` at /conf."""
    labels = {"app": name}
    container = {
        "name": name,
        "image": image,
        "args": args,
        "ports": [{"containerPort": p, "protocol": "TCP"} for p in ports],
        "readinessProbe": probe,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [kube.config_mount("/conf")],
    }
    pod = {
        "securityContext": kube.pod_security(),
        "containers": [container],
        "volumes": [kube.config_volume(f"{name}-config")],
    }
    data = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "selector": kube.match_labels(labels),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }
    return Manifest(data)


def _service(name: str, selector: str, ports: list[dict[str, Any]]) -> Manifest:
    return Manifest(kube.service(name, NAMESPACE, {"app": selector}, ports))


def _datasource(kind: str, url: str) -> Manifest:
    source = {"name": kind.capitalize(), "type": kind, "uid": kind, "access": "proxy", "url": url}
    data = kube.config_map(
        f"{kind}-datasource",
        NAMESPACE,
        {"grafana_datasource": "1"},
        {f"{kind}.yaml": dump({"apiVersion": 1, "datasources": [source]})},
    )
    return Manifest(data, ["Grafana data source (loaded by the Grafana Helm chart's datasource sidecar)."])


def _tempo_volume_claim() -> Manifest:
    return Manifest(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "tempo-data", "namespace": NAMESPACE},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}},
        }
    )


def _mount_tempo_data(dep: Manifest) -> None:
    """The claim at /var/tempo, writable by the user the image runs as."""
    pod = kube.pod_of(dep.data)
    pod["securityContext"]["fsGroup"] = TEMPO_UID
    pod["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "tempo-data"}})
    pod["containers"][0]["volumeMounts"].append({"name": "data", "mountPath": "/var/tempo"})


def render(value: str, storage: str) -> Backend:
    kind, endpoint = parse(value)
    if kind == "external":
        return _external(endpoint)
    if kind == "jaeger":
        return _jaeger(storage)
    return _tempo()


def _external(endpoint: str) -> Backend:
    warning = (
        f"traces go to {endpoint}, which this output does not define: check it accepts OTLP/gRPC "
        "with TLS (the exporter keeps TLS on, the Collector's default)"
    )
    return Backend(endpoint=endpoint, warnings=[("backend-external", warning)])


def _jaeger(storage: str) -> Backend:
    out = Backend(config=_jaeger_config(storage))
    out.endpoint = f"jaeger-collector.{NAMESPACE}.svc.cluster.local:{OTLP_GRPC}"
    probe = {"httpGet": {"path": "/status", "port": HEALTH}}
    dep = _deployment(
        "jaeger",
        JAEGER_IMAGE,
        ["--config=/conf/config.yaml"],
        [OTLP_GRPC, OTLP_HTTP, JAEGER_UI, HEALTH],
        probe,
    )
    dep.notes.append(
        f"Jaeger v2 on {storage} at {STORAGE_SERVERS[storage]} (not rendered: point it at your "
        "cluster). One replica; the storage holds the state, so more replicas can be added."
    )
    otlp = [
        kube.service_port("grpc-otlp", OTLP_GRPC, "grpc"),
        kube.service_port("http-otlp", OTLP_HTTP, "http"),
    ]
    out.files["backend/jaeger.yaml"] = [
        _config_map("jaeger", out.config),
        dep,
        _service("jaeger-collector", "jaeger", otlp),
        _service("jaeger-query", "jaeger", [kube.service_port("http-query", JAEGER_UI, "http")]),
    ]
    out.files["backend/grafana-datasource.yaml"] = [
        _datasource("jaeger", f"http://jaeger-query.{NAMESPACE}.svc.cluster.local:{JAEGER_UI}")
    ]
    out.warnings.append(
        (
            "backend-storage-external",
            f"Jaeger stores traces in {storage} at {STORAGE_SERVERS[storage]}, which this output does "
            "not deploy: run it (or change the address) before applying backend/",
        )
    )
    return out


def _tempo() -> Backend:
    out = Backend(config=_tempo_config())
    out.endpoint = f"tempo.{NAMESPACE}.svc.cluster.local:{OTLP_GRPC}"
    probe = {"httpGet": {"path": "/ready", "port": TEMPO_HTTP}}
    dep = _deployment(
        "tempo", TEMPO_IMAGE, ["-config.file=/conf/config.yaml"], [OTLP_GRPC, OTLP_HTTP, TEMPO_HTTP], probe
    )
    _mount_tempo_data(dep)
    ports = [
        kube.service_port("grpc-otlp", OTLP_GRPC, "grpc"),
        kube.service_port("http-otlp", OTLP_HTTP, "http"),
        kube.service_port("http-query", TEMPO_HTTP, "http"),
    ]
    out.files["backend/tempo.yaml"] = [
        _tempo_volume_claim(),
        _config_map("tempo", out.config),
        dep,
        _service("tempo", "tempo", ports),
    ]
    out.files["backend/grafana-datasource.yaml"] = [
        _datasource("tempo", f"http://tempo.{NAMESPACE}.svc.cluster.local:{TEMPO_HTTP}")
    ]
    out.warnings.append(
        (
            "backend-single-binary",
            "Tempo runs as one replica on a local volume: for more, use its distributed mode with object "
            "storage (S3, GCS, Azure)",
        )
    )
    return out


def _host(endpoint: str) -> str:
    host = endpoint.rpartition(":")[0] or endpoint
    return host.split("//")[-1]


def wire(rendered: Rendered, backend: Backend, notes: list[str]) -> None:
    """An otlp_grpc exporter to the backend in every traces pipeline, unless one points there."""
    config = rendered.config
    exporters = config.setdefault("exporters", {})
    target_host, target_port = backend.endpoint.rpartition(":")[::2]
    short = target_host.removesuffix(".svc.cluster.local")
    for eid, given in exporters.items():
        endpoint = str(given.get("endpoint", "")) if isinstance(given, dict) else ""
        host = _host(endpoint)
        if endpoint.endswith(f":{target_port}") and host in (target_host, short, f"{short}.svc"):
            notes.append(f"exporters.{eid} sends to {endpoint}: the backend rendered in backend/.")
            return
    settings: dict[str, Any] = {"endpoint": backend.endpoint}
    if backend.config:  # in the cluster: plaintext OTLP (Istio's mTLS protects it where meshed)
        settings["tls"] = {"insecure": True}
    exporters[EXPORTER] = settings
    for name, pipeline in pipelines(config).items():
        if component_type(name) == "traces" and isinstance(pipeline, dict):
            pipeline["exporters"] = [*(pipeline.get("exporters") or []), EXPORTER]
    notes.append(f"exporters.{EXPORTER} added: traces go to the backend at {backend.endpoint}.")
