"""Resource: container id from cgroup files, env attributes, precedence, the seed's attributes."""

from __future__ import annotations

from pathlib import Path

from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.sdk.resource import (
    ContainerResourceDetector,
    build_resource,
    container_id_from_cgroup,
    container_id_from_mountinfo,
    env_resource_attributes,
)

CID = "a" * 16 + "0123456789abcdef" * 3


def test_cgroup_v1_formats() -> None:
    assert container_id_from_cgroup(f"12:pids:/docker/{CID}\n") == CID
    assert (
        container_id_from_cgroup(f"1:name=systemd:/kubepods/burstable/pod1/cri-containerd-{CID}.scope") == CID
    )
    assert container_id_from_cgroup(f"0::/system.slice/docker-{CID}.scope\n") == CID
    assert container_id_from_cgroup("0::/\n") is None
    assert container_id_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n") is None


def test_cgroup_v2_mountinfo() -> None:
    line = f"1 2 254:1 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw - ext4 /dev/vda1 rw"
    assert container_id_from_mountinfo("x\n" + line) == CID
    assert container_id_from_mountinfo("1 2 0:1 / / rw - overlay overlay rw\n") is None


def test_detector_reads_proc_files(tmp_path: Path) -> None:
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "mountinfo").write_text(
        f"1 2 254:1 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw\n"
    )
    assert ContainerResourceDetector(tmp_path).detect().attributes == {"container.id": CID}
    assert ContainerResourceDetector(tmp_path / "missing").detect().attributes == {}


@settings(max_examples=examples(200), deadline=None)
@given(st.text(max_size=300))
def test_cgroup_parsers_never_crash(text: str) -> None:
    for found in (container_id_from_cgroup(text), container_id_from_mountinfo(text)):
        assert found is None or (len(found) == 64 and found in text)


def test_env_attributes_read_legacy_environment_and_service_name() -> None:
    attrs = env_resource_attributes(
        {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,team=core", "OTEL_SERVICE_NAME": "svc"}
    )
    assert attrs == {"deployment.environment.name": "staging", "team": "core", "service.name": "svc"}


def test_precedence_defaults_then_detected_then_env_then_arguments() -> None:
    plain = build_resource({}, detectors=[]).attributes
    assert plain["service.name"] == "unknown_service"
    assert plain["deployment.environment.name"] == "production"  # the seed's value
    assert plain["telemetry.sdk.language"] == "python"
    from_env = build_resource({"OTEL_SERVICE_NAME": "env-name"}, detectors=[]).attributes
    assert from_env["service.name"] == "env-name"
    explicit = build_resource(
        {"OTEL_SERVICE_NAME": "env-name"}, "arg-name", "2.0.0", "dev", detectors=[]
    ).attributes
    assert (
        explicit["service.name"],
        explicit["service.version"],
        explicit["deployment.environment.name"],
    ) == (
        "arg-name",
        "2.0.0",
        "dev",
    )


def test_default_detectors_fill_host_process_and_os() -> None:
    attrs = build_resource({"OTEL_SERVICE_NAME": "svc"}).attributes
    for key in (
        "host.name",
        "host.arch",
        "process.pid",
        "process.runtime.name",
        "os.type",
        "service.instance.id",
    ):
        assert key in attrs, key
