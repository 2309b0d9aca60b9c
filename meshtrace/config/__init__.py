"""Kubernetes/Istio configuration: load YAML (`load`), resolve one workload's effective tracing
and metrics config exactly as istiod does (`effective_config`), and lint (`lint`)."""

from meshtrace.config.loader import Bundle, load
from meshtrace.config.model import (
    ConfigMap,
    Container,
    ContainerPort,
    Deployment,
    Finding,
    HorizontalPodAutoscaler,
    Ignored,
    IstioOperator,
    Namespace,
    Origin,
    PrometheusRule,
    Service,
    ServicePort,
    Source,
    Telemetry,
)
from meshtrace.config.resolve import effective_config, effective_document

__all__ = [
    "Bundle",
    "ConfigMap",
    "Container",
    "ContainerPort",
    "Deployment",
    "Finding",
    "HorizontalPodAutoscaler",
    "Ignored",
    "IstioOperator",
    "Namespace",
    "Origin",
    "PrometheusRule",
    "Service",
    "ServicePort",
    "Source",
    "Telemetry",
    "effective_config",
    "effective_document",
    "load",
]
