"""The resource every span of a service carries: the seed's `resource.New(WithAttributes(service
name, version, environment), WithHost(), WithProcess(), WithContainer(), WithOS())`."""

from __future__ import annotations

import platform
import re
import socket
from collections.abc import Mapping
from pathlib import Path

from opentelemetry.sdk.resources import (
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    OsResourceDetector,
    ProcessResourceDetector,
    Resource,
    ResourceDetector,
    ServiceInstanceIdResourceDetector,
    get_aggregated_resources,
)
from opentelemetry.sdk.version import __version__ as SDK_VERSION
from opentelemetry.semconv.attributes.deployment_attributes import DEPLOYMENT_ENVIRONMENT_NAME
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.util.re import parse_env_headers

# The seed's resource values when nothing else says otherwise.
DEFAULT_ENVIRONMENT = "production"
UNKNOWN_SERVICE = "unknown_service"
LEGACY_ENVIRONMENT = "deployment.environment"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MOUNTINFO_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def container_id_from_cgroup(text: str) -> str | None:
    """The container id in /proc/self/cgroup (cgroup v1): the last path segment of a line, as
    `<id>`, `docker-<id>.scope` or `cri-containerd-<id>.scope`."""
    for line in text.splitlines():
        segment = line.strip().rsplit("/", 1)[-1].removesuffix(".scope")
        candidate = segment.rsplit("-", 1)[-1].rsplit(":", 1)[-1]
        if _HEX64.fullmatch(candidate):
            return candidate
    return None


def container_id_from_mountinfo(text: str) -> str | None:
    """The container id in /proc/self/mountinfo (cgroup v2, where /proc/self/cgroup is just `0::/`):
    the runtime bind-mounts `.../containers/<id>/hostname` into the container."""
    for line in text.splitlines():
        match = _MOUNTINFO_ID.search(line)
        if match:
            return match.group(1)
    return None


class ContainerResourceDetector(ResourceDetector):
    """`container.id` from the cgroup files; nothing when not in a container."""

    def __init__(self, proc: Path = Path("/proc/self")) -> None:
        super().__init__()
        self.proc = proc

    def _read(self, name: str) -> str:
        try:
            return (self.proc / name).read_text(errors="replace")
        except OSError:
            return ""

    def detect(self) -> Resource:
        found = container_id_from_cgroup(self._read("cgroup")) or container_id_from_mountinfo(
            self._read("mountinfo")
        )
        return Resource({"container.id": found} if found else {})


class HostResourceDetector(ResourceDetector):
    """`host.name` and `host.arch`."""

    def detect(self) -> Resource:
        return Resource({"host.name": socket.gethostname(), "host.arch": platform.machine()})


def env_resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES plus OTEL_SERVICE_NAME (which wins for service.name). The old
    `deployment.environment` key is read as `deployment.environment.name`."""
    raw = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    attributes = dict(parse_env_headers(raw, liberal=True)) if raw.strip() else {}
    if LEGACY_ENVIRONMENT in attributes:
        attributes.setdefault(DEPLOYMENT_ENVIRONMENT_NAME, attributes.pop(LEGACY_ENVIRONMENT))
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        attributes[SERVICE_NAME] = service
    return attributes


def build_resource(
    env: Mapping[str, str],
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    detectors: list[ResourceDetector] | None = None,
) -> Resource:
    """Detected attributes, overridden by the environment, overridden by explicit arguments;
    service.name and deployment.environment.name always present."""
    if detectors is None:
        detectors = [
            HostResourceDetector(),
            ProcessResourceDetector(),
            ContainerResourceDetector(),
            OsResourceDetector(),
            # service.instance.id tells replicas apart (the seed runs two of each).
            ServiceInstanceIdResourceDetector(),
        ]
    detected = get_aggregated_resources(detectors, initial_resource=Resource.get_empty())
    explicit: dict[str, str] = {}
    if service_name:
        explicit[SERVICE_NAME] = service_name
    if service_version:
        explicit[SERVICE_VERSION] = service_version
    if environment:
        explicit[DEPLOYMENT_ENVIRONMENT_NAME] = environment
    defaults = Resource(
        {
            SERVICE_NAME: UNKNOWN_SERVICE,
            DEPLOYMENT_ENVIRONMENT_NAME: DEFAULT_ENVIRONMENT,
            TELEMETRY_SDK_LANGUAGE: "python",
            TELEMETRY_SDK_NAME: "opentelemetry",
            TELEMETRY_SDK_VERSION: SDK_VERSION,
        }
    )
    return defaults.merge(detected).merge(Resource(env_resource_attributes(env))).merge(Resource(explicit))
