"""Builds the control plane's `Snapshot` from the -f files with `meshtrace.config` (load and
effective_document): the one place the control plane touches configuration resolution."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from meshtrace import config
from meshtrace.config.protocol import port_protocol
from meshtrace.control.core import ServicePort, ServiceSpec, Snapshot
from meshtrace.document import Document


def load_snapshot(paths: list[Path]) -> Snapshot:
    bundle = config.load(paths)
    # istiod reads PILOT_TRACE_SAMPLING and friends from its own environment.
    env = dict(os.environ)

    def effective(workload: str, namespace: str, labels: Mapping[str, str]) -> Document:
        return config.effective_document(bundle, workload, namespace, dict(labels), env)

    return Snapshot(
        services=[
            ServiceSpec(
                name=s.name,
                namespace=s.namespace,
                selector=dict(s.selector),
                ports=tuple(
                    ServicePort(
                        p.name,
                        p.port,
                        p.target_port,
                        p.app_protocol,
                        port_protocol(p.port, p.name, p.protocol, p.app_protocol),
                    )
                    for p in s.ports
                ),
            )
            for s in bundle.services
        ],
        pod_labels={(d.namespace, d.name): dict(d.pod_labels) for d in bundle.deployments},
        effective=effective,
        trust_domain=str(bundle.mesh.get("trustDomain") or "cluster.local"),
        errors={
            (
                p.code,
                p.file,
                p.resource,
                p.path,
            ): f"{p.file}: {p.resource or 'document'} {p.path}: {p.message}".strip()
            for p in bundle.problems
            if p.severity == "error"
        },
    )
