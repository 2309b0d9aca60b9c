"""The Prometheus text exposition format (version 0.0.4) that the sidecar's stats port and the
collector's `/metrics` write: label escaping, label sets, HELP/TYPE lines, sample lines and the
two value spellings (Envoy's and Go's client library).

The format (https://prometheus.io/docs/instrumenting/exposition_formats/): a label value escapes
backslash, double quote and newline (`\\\\`, `\\"`, `\\n`); HELP text escapes backslash and newline
only; a sample is `name{label="value",...} value`, the braces left out when there is no label.
"""

from __future__ import annotations

from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label_value(value: str) -> str:
    """A label value as it goes between the double quotes."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    """HELP text: backslash and newline escaped (a double quote stays as it is)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def label_set(labels: Iterable[tuple[str, str]]) -> str:
    """`{k="v",...}` in the order given, or "" when there is no label."""
    text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
    return "{" + text + "}" if text else ""


def family_header(name: str, kind: str, help_text: str | None = None) -> list[str]:
    """The `# HELP` (when there is a text) and `# TYPE` lines that open a metric family."""
    lines = [f"# HELP {name} {escape_help(help_text)}"] if help_text is not None else []
    lines.append(f"# TYPE {name} {kind}")
    return lines


def sample(name: str, labels: str, value: str) -> str:
    """One sample line; `labels` is a `label_set` result, `value` already spelled."""
    return f"{name}{labels} {value}"


def envoy_value(value: float) -> str:
    """A value as Envoy's stats page writes it: integers without a fraction, others in Python's
    shortest round-trip form (`12.5`)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def go_value(value: float) -> str:
    """A value as prometheus_client spells it after Go's client library (`+Inf`, `NaN`, `1e+06`)."""
    # Imported here: the sidecar, which writes only `envoy_value`, does not load prometheus_client.
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(value))


def exposition(lines: Iterable[str]) -> bytes:
    """The lines of a scrape joined into the body: newline-separated and newline-terminated."""
    return ("\n".join(lines) + "\n").encode()
