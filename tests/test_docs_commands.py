"""Every command in README.md and docs/*.md works as written.

The commands are read from the fenced code blocks. A usage line (with `[...]`, `a|b` or upper-case
placeholders) must name only options its command's `--help` lists; an example runs, offline
(`explain`, `lint`, ...) or against a running `meshtrace up` (the curl lines, `status`, `logs`),
with the README's addresses moved to the test's own; what cannot run in a test is in SKIP with
the reason. A command in no table fails the test, so new docs get checked too."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshtrace.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"", "sh", "bash", "console", "shell"}
_COMMAND = re.compile(r"^(\.venv/bin/)?(meshtrace|curl|make|python)\b|^\.venv/bin/python\b")
_PLACEHOLDER = re.compile(r"\[|\w\|\w|\b[A-Z][A-Z_]+\b")

# command -> expected exit status, run from the repository root.
OFFLINE = {
    ".venv/bin/meshtrace explain -f examples/seed --workload frontend": 0,
    "meshtrace explain -f ../shared/seed/manifests --workload checkout --namespace payment "
    "--labels app=checkout,version=v1": 0,
    "meshtrace lint -f ../shared/seed/manifests": 1,  # the guide's manifests have errors: exit 1
}
# Against a running `up` (exit 0 each).
MESH = {
    "curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' "
    "http://127.0.0.1:8080/api/data",
    "curl 'http://127.0.0.1:8080/api/data?fail=1'",
    ".venv/bin/meshtrace status",
    ".venv/bin/meshtrace logs frontend-0",
    "curl -s http://127.0.1.1:15090/stats/prometheus | grep istio_requests_total",
}
SKIP = {
    "make demo": "builds a fresh .venv and runs until Ctrl-C; the mesh it starts is tested below",
    "make test": "is the test run itself",
    "python -m meshtrace.document > docs/config-document.schema.json": "rewrites a committed file; "
    "tests/document checks that the committed copy is what it prints",
    "python tools/collector_catalogue.py --core core.git --releases releases.git [--contrib contrib] "
    "--version v0.156.0": "needs git mirrors of the upstream Collector repositories, which tests do not have",
    ".venv/bin/meshtrace up -f path/to/the/guide --traffic 5": "a path of the reader's; "
    "tests/runtime/test_up_e2e.py runs up on the guide's folder",
    "meshtrace collector": "runs until stopped; tests/collector start it the same way",
    "meshtrace collector --config otel-collector.yaml": "an illustrative file name",
    "meshtrace collector --config a.yaml --config b.yaml": "illustrative file names",
    "meshtrace collector --config c.yaml --set receivers.otlp.protocols.grpc.endpoint=127.0.0.1:0": "an "
    "illustrative file name",
    "meshtrace collector --drain-timeout 10": "runs until stopped",
    "python -m meshtrace.control.latency --edits 30": "a measurement: minutes of edits, run by hand",
    "meshtrace bench collector": "a benchmark: minutes of load, run by hand",
    "meshtrace bench faults --seconds 30 --rate 100": "a benchmark: minutes of load, run by hand",
    "meshtrace bench store": "a benchmark: minutes of load, run by hand",
    "meshtrace bench store --spans 200000": "a benchmark: minutes of load, run by hand",
    "meshtrace bench store --engine-rows 0 --queries 200 --ingest-spans 400000": "a benchmark, run by hand",
    ".venv/bin/python bench/first_trace.py --runs 3 --screenshot docs/img/up-trace-view.png": "a "
    "benchmark with screenshots, run by hand",
}


@dataclass(frozen=True)
class Command:
    file: str
    line: int
    text: str

    @property
    def usage(self) -> bool:
        return self.text.startswith(("meshtrace ", ".venv/bin/meshtrace ")) and bool(
            _PLACEHOLDER.search(self.text)
        )


def commands() -> list[Command]:
    out = []
    for doc in DOCS:
        fence: str | None = None
        pending = ""
        start = 0
        for number, raw in enumerate(doc.read_text().splitlines(), start=1):
            opening = re.match(r"^\s*```(\S*)", raw)
            if opening:
                fence = opening[1] if fence is None else None
                continue
            if fence not in SHELL_FENCES:
                continue
            line = raw.strip().removeprefix("$ ")
            if not pending and not _COMMAND.match(line):
                continue
            start = start if pending else number
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            text = re.sub(r"\s+#\s.*$", "", pending + line).strip()
            pending = ""
            out.append(Command(str(doc.relative_to(ROOT)), start, text))
    return out


ALL = commands()


def test_every_command_in_the_docs_is_checked() -> None:
    assert len(ALL) >= 30
    unchecked = [
        f"{c.file}:{c.line}: {c.text}"
        for c in ALL
        if not c.usage and c.text not in OFFLINE and c.text not in MESH and c.text not in SKIP
    ]
    assert not unchecked, "add these to OFFLINE, MESH or SKIP (with the reason):\n" + "\n".join(unchecked)
    documented = {c.text for c in ALL}
    stale = [t for t in [*OFFLINE, *MESH, *SKIP] if t not in documented]
    assert not stale, f"no longer in the docs: {stale}"


def _subcommands(words: list[str]) -> list[list[str]]:
    """`meshtrace bench overhead|collector|store ...` -> [[bench, overhead], [bench, collector], ...]."""
    path: list[list[str]] = [[]]
    for word in words[1:]:
        if word.startswith(("-", "[")) or not re.fullmatch(r"[a-z|]+", word):
            break
        path = [[*p, alt] for p in path for alt in word.split("|")]
    return path


@pytest.mark.parametrize("command", [c for c in ALL if c.usage], ids=lambda c: f"{c.file}:{c.line}")
def test_a_usage_line_names_only_options_its_command_has(command: Command) -> None:
    words = command.text.removeprefix(".venv/bin/").split()
    options = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", command.text))
    for sub in _subcommands(words):
        result = CliRunner().invoke(main, [*sub, "--help"])
        assert result.exit_code == 0, (sub, result.output)
        missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}\b", result.output)]
        assert not missing, f"{command.file}:{command.line}: meshtrace {' '.join(sub)} has no {missing}"


def _shared() -> None:
    if not (ROOT.parent / "shared" / "seed" / "manifests").is_dir():
        pytest.skip("../shared/seed/manifests not present")


@pytest.mark.e2e
@pytest.mark.parametrize("text", sorted(OFFLINE))
def test_an_offline_example_runs(text: str) -> None:
    if "../shared" in text:
        _shared()
    argv = [sys.executable, "-m", "meshtrace", *text.split()[1:]]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == OFFLINE[text], result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_examples_run_against_a_running_mesh(meshtrace_process: Any, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    a, b = random.randint(100, 250), random.randint(1, 250)
    host, pods = f"127.{a}.{b}.200", f"127.{a}.{b}"
    data = tmp_path / "data"
    up = meshtrace_process(
        [
            *("up", "--host", host, "--network", f"{pods}.0/25", "--ingress", f"{host}:8080"),
            *("--ui", f"{host}:16686", "--data-dir", str(data)),
        ]
    )
    listeners = up.wait_for_listeners("ingress", "control", timeout=180)
    control = "http://{}:{}".format(*listeners["control"])
    meshtrace = f"{sys.executable} -m meshtrace"
    failures = []
    for text in sorted(MESH):
        script = (
            text.replace("127.0.0.1:8080", "{}:{}".format(*listeners["ingress"]))
            .replace("127.0.1.1:", f"{pods}.1:")
            .replace(".venv/bin/meshtrace status", f"{meshtrace} status --control {control}")
            .replace(".venv/bin/meshtrace logs", f"{meshtrace} logs --data-dir {data}")
        )
        assert not script.startswith(".venv/"), script  # every example is run by this interpreter
        for _ in range(20):  # the first requests may race the sidecars' first config
            result = subprocess.run(
                ["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True, timeout=60
            )
            if result.returncode == 0 and result.stdout:
                break
            subprocess.run(["sleep", "0.5"], check=True)
        if result.returncode != 0 or not result.stdout:
            failures.append(
                f"{text}\n  ran: {script}\n  -> {result.returncode} {result.stdout} {result.stderr}"
            )
    assert not failures, "\n".join(failures)
