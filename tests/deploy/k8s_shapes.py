"""The parts of the Kubernetes API (and the Prometheus Operator CRDs) that rendered resources use,
as structural schemas for `meshtrace.config.schema.validate`: required fields, types, and no
unknown field (a typo is an error, as `kubectl apply --validate=strict` makes it)."""

from __future__ import annotations

from typing import Any


def obj(required: tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": props}


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
STR_MAP = {"type": "object", "additionalProperties": STR}
ANY_OBJ = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
META = obj(("name",), name=STR, namespace=STR, labels=STR_MAP, annotations=STR_MAP)
SELECTOR = obj(("matchLabels",), matchLabels=STR_MAP)
LABEL_SELECTOR = obj(matchLabels=STR_MAP, matchExpressions=arr(ANY_OBJ))
PROBE = obj(
    ("httpGet",),
    httpGet=obj(("port",), path=STR, port=PORT),
    initialDelaySeconds=INT,
    periodSeconds=INT,
)
CONTAINER = obj(
    ("name", "image"),
    name=STR,
    image=STR,
    args=arr(STR),
    env=arr(obj(("name",), name=STR, value=STR, valueFrom=obj(fieldRef=obj(("fieldPath",), fieldPath=STR)))),
    ports=arr(
        obj(("containerPort",), name={"type": "string", "maxLength": 15}, containerPort=PORT, protocol=STR)
    ),
    resources=obj(limits=STR_MAP, requests=STR_MAP),
    readinessProbe=PROBE,
    livenessProbe=PROBE,
    securityContext=obj(
        allowPrivilegeEscalation=BOOL, readOnlyRootFilesystem=BOOL, capabilities=obj(drop=arr(STR))
    ),
    volumeMounts=arr(obj(("name", "mountPath"), name=STR, mountPath=STR, readOnly=BOOL)),
)
POD_SPEC = obj(
    ("containers",),
    affinity=ANY_OBJ,
    topologySpreadConstraints=arr(
        obj(
            ("maxSkew", "topologyKey", "whenUnsatisfiable"),
            maxSkew=INT,
            topologyKey=STR,
            whenUnsatisfiable={"type": "string", "enum": ["DoNotSchedule", "ScheduleAnyway"]},
            labelSelector=LABEL_SELECTOR,
        )
    ),
    securityContext=obj(runAsNonRoot=BOOL, seccompProfile=obj(("type",), type=STR)),
    containers=arr(CONTAINER),
    volumes=arr(obj(("name",), name=STR, configMap=obj(("name",), name=STR))),
)
RULE = obj(
    ("expr",),
    alert=STR,
    record=STR,
    expr=STR,
    labels=STR_MAP,
    annotations=STR_MAP,
    **{"for": STR},
)


def resource(spec: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"apiVersion": STR, "kind": STR, "metadata": META, **top}
    if spec is not None:
        props["spec"] = spec
    required = ("apiVersion", "kind", "metadata", *(("spec",) if spec is not None else ()))
    return obj(required, **props)


SHAPES: dict[tuple[str, str], dict[str, Any]] = {
    ("v1", "Namespace"): resource(),
    ("v1", "ConfigMap"): resource(data=STR_MAP),
    ("apps/v1", "Deployment"): resource(
        obj(
            ("selector", "template"),
            replicas=INT,
            selector=SELECTOR,
            strategy=obj(
                type={"type": "string", "enum": ["RollingUpdate", "Recreate"]},
                rollingUpdate=obj(maxSurge=INT, maxUnavailable=INT),
            ),
            template=obj(("spec",), metadata=obj(labels=STR_MAP, annotations=STR_MAP), spec=POD_SPEC),
        )
    ),
    ("v1", "Service"): resource(
        obj(
            ("ports",),
            selector=STR_MAP,
            ports=arr(obj(("port",), name=STR, port=PORT, targetPort=PORT, protocol=STR, appProtocol=STR)),
        )
    ),
    ("policy/v1", "PodDisruptionBudget"): resource(
        obj(("selector",), maxUnavailable=INT, minAvailable=INT, selector=SELECTOR)
    ),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): resource(
        obj(
            ("scaleTargetRef", "maxReplicas"),
            scaleTargetRef=obj(("kind", "name"), apiVersion=STR, kind=STR, name=STR),
            minReplicas={"type": "integer", "minimum": 1},
            maxReplicas={"type": "integer", "minimum": 1},
            metrics=arr(
                obj(
                    ("type",),
                    type=STR,
                    resource=obj(
                        ("name", "target"),
                        name=STR,
                        target=obj(("type",), type=STR, averageUtilization=INT),
                    ),
                )
            ),
        )
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): resource(
        obj(("groups",), groups=arr(obj(("name", "rules"), name=STR, interval=STR, rules=arr(RULE))))
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): resource(
        obj(
            ("selector", "endpoints"),
            selector=SELECTOR,
            namespaceSelector=obj(matchNames=arr(STR), any=BOOL),
            endpoints=arr(obj(("port",), port=STR, path=STR, interval=STR)),
        )
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): resource(
        obj(
            ("selector", "podMetricsEndpoints"),
            selector=LABEL_SELECTOR,
            namespaceSelector=obj(matchNames=arr(STR), any=BOOL),
            podMetricsEndpoints=arr(obj(("port",), port=STR, path=STR, interval=STR)),
        )
    ),
    ("install.istio.io/v1alpha1", "IstioOperator"): resource(
        obj(("meshConfig",), profile=STR, meshConfig=ANY_OBJ, components=ANY_OBJ, values=ANY_OBJ)
    ),
    ("telemetry.istio.io/v1", "Telemetry"): resource(ANY_OBJ),  # the CRD schema checks the spec
}
