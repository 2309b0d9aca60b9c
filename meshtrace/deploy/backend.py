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

from meshtrace.deploy.collector import Rendered
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


def _port(name: str, port: int, app: str | None = None) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": port, "protocol": "TCP"} | (
        {"appProtocol": app} if app else {}
    )


def _workload(
    name: str, image: str, args: list[str], config: dict[str, Any], ports: list[int], probe: dict[str, Any]
) -> list[Manifest]:
    labels = {"app": name}
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "namespace": NAMESPACE, "labels": labels},
        "data": {"config.yaml": dump(config)},
    }
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "args": args,
                            "ports": [{"containerPort": p, "protocol": "TCP"} for p in ports],
                            "readinessProbe": probe,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "config", "mountPath": "/conf", "readOnly": True}],
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
                },
            },
        },
    }
    return [Manifest(cm), Manifest(dep)]


def _service(name: str, selector: str, ports: list[dict[str, Any]]) -> Manifest:
    data = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"app": selector}, "ports": ports},
    }
    return Manifest(data)


def _datasource(kind: str, url: str) -> Manifest:
    source = {"name": kind.capitalize(), "type": kind, "uid": kind, "access": "proxy", "url": url}
    data = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{kind}-datasource",
            "namespace": NAMESPACE,
            "labels": {"grafana_datasource": "1"},
        },
        "data": {f"{kind}.yaml": dump({"apiVersion": 1, "datasources": [source]})},
    }
    return Manifest(data, ["Grafana data source (loaded by the Grafana Helm chart's datasource sidecar)."])


def render(value: str, storage: str) -> Backend:
    kind, endpoint = parse(value)
    out = Backend()
    if kind == "external":
        out.endpoint = endpoint
        out.warnings.append(
            (
                "backend-external",
                f"traces go to {endpoint}, which this output does not define: check it accepts OTLP/gRPC "
                "with TLS (the exporter keeps TLS on, the Collector's default)",
            )
        )
        return out
    if kind == "jaeger":
        out.config = _jaeger_config(storage)
        out.endpoint = f"jaeger-collector.{NAMESPACE}.svc.cluster.local:{OTLP_GRPC}"
        docs = _workload(
            "jaeger",
            JAEGER_IMAGE,
            ["--config=/conf/config.yaml"],
            out.config,
            [OTLP_GRPC, OTLP_HTTP, JAEGER_UI, HEALTH],
            {"httpGet": {"path": "/status", "port": HEALTH}},
        )
        docs.append(
            _service(
                "jaeger-collector",
                "jaeger",
                [_port("grpc-otlp", OTLP_GRPC, "grpc"), _port("http-otlp", OTLP_HTTP, "http")],
            )
        )
        docs.append(_service("jaeger-query", "jaeger", [_port("http-query", JAEGER_UI, "http")]))
        docs[1].notes.append(
            f"Jaeger v2 on {storage} at {STORAGE_SERVERS[storage]} (not rendered: point it at your "
            "cluster). One replica; the storage holds the state, so more replicas can be added."
        )
        out.files["backend/jaeger.yaml"] = docs
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
    out.config = _tempo_config()
    out.endpoint = f"tempo.{NAMESPACE}.svc.cluster.local:{OTLP_GRPC}"
    docs = _workload(
        "tempo",
        TEMPO_IMAGE,
        ["-config.file=/conf/config.yaml"],
        out.config,
        [OTLP_GRPC, OTLP_HTTP, TEMPO_HTTP],
        {"httpGet": {"path": "/ready", "port": TEMPO_HTTP}},
    )
    pod = docs[1].data["spec"]["template"]["spec"]
    pod["securityContext"]["fsGroup"] = TEMPO_UID
    pod["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "tempo-data"}})
    pod["containers"][0]["volumeMounts"].append({"name": "data", "mountPath": "/var/tempo"})
    docs.insert(
        0,
        Manifest(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "tempo-data", "namespace": NAMESPACE},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}},
            }
        ),
    )
    docs.append(
        _service(
            "tempo",
            "tempo",
            [
                _port("grpc-otlp", OTLP_GRPC, "grpc"),
                _port("http-otlp", OTLP_HTTP, "http"),
                _port("http-query", TEMPO_HTTP, "http"),
            ],
        )
    )
    out.files["backend/tempo.yaml"] = docs
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
    for name, pipeline in ((config.get("service") or {}).get("pipelines") or {}).items():
        if name.split("/", 1)[0] == "traces" and isinstance(pipeline, dict):
            pipeline["exporters"] = [*(pipeline.get("exporters") or []), EXPORTER]
    notes.append(f"exporters.{EXPORTER} added: traces go to the backend at {backend.endpoint}.")
