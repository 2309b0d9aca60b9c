"""Text rendering of a config document for `meshtrace explain` (rich tables with provenance)."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# (document key inside a tracing direction, label)
_ROWS = (
    ("enabled", "spans reported"),
    ("provider", "provider"),
    ("random_sampling_percentage", "sampling %"),
    ("custom_tags", "custom tags"),
    ("disable_span_reporting", "disableSpanReporting"),
    ("use_request_id_for_trace_sampling", "useRequestIdForTraceSampling"),
    ("enable_istio_tags", "enableIstioTags"),
    ("max_path_tag_length", "max path tag length"),
    ("propagation", "propagation (read/write)"),
)


def source_text(src: dict[str, Any] | None) -> str:
    """ "Telemetry default/x spec.tracing[0].randomSamplingPercentage (file.yaml)"."""
    if not src:
        return ""
    parts = [src.get("resource") or ""]
    if src.get("field"):
        parts.append(str(src["field"]))
    text = " ".join(p for p in parts if p)
    if src.get("file"):
        text += f" ({os.path.basename(str(src['file']))})"
    return text


def _value(key: str, value: Any) -> str:
    if key == "provider":
        if not value:
            return "none"
        target = f"{value['service']}:{value['port']}"
        path = value.get("path") or ""
        kind = f"{value['type']}, {value['protocol']}"
        return f"{value['name']} ({kind}) -> {target}{path}, writes {value['trace_context']}"
    if key == "custom_tags":
        if not value:
            return "none"
        out = []
        for name, tag in value.items():
            kind, body = next(iter(tag.items()))
            if kind == "literal":
                out.append(f"{name}={body.get('value')}")
            else:
                default = f" or {body['default_value']}" if body.get("default_value") else ""
                out.append(f"{name}=<{kind} {body.get('name', body.get('value'))}{default}>")
        return ", ".join(out)
    if key == "propagation":
        return f"{'+'.join(value['read']) or '-'} / {'+'.join(value['write']) or '-'}"
    if key == "random_sampling_percentage":
        return f"{value:g}%"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render_text(doc: dict[str, Any], console: Console | None = None) -> None:
    """Values are printed as plain text: `[...]` in key paths and names is not rich markup."""
    console = console or Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, soft_wrap=True)
    _render_workload(doc, console)
    console.print(_tracing_table(doc))
    _render_metrics(doc, console)
    if "security" in doc:
        render_security(doc["security"], console)
    if doc["warnings"]:
        console.print("[bold]Notes[/bold]")
        for warning in doc["warnings"]:
            console.print(Text(f"  - {warning}"), highlight=False)


def _render_workload(doc: dict[str, Any], console: Console) -> None:
    """The workload, its mesh and the Telemetry resources applied and ignored."""
    w, sources = doc["workload"], doc["sources"]
    labels = escape(",".join(f"{k}={v}" for k, v in w["labels"].items()))
    console.print(
        f"[bold]Workload {escape(w['namespace'])}/{escape(w['name'])}[/bold]  labels {labels}"
        f"  [dim](from {escape(source_text(sources.get('workload.labels')))})[/dim]"
    )
    console.print(
        Text(
            f"service.name {w['service_name']}  canonical {w['canonical_service']}/{w['canonical_revision']}"
            f"  mesh {doc['mesh']['mesh_id']} root namespace {doc['mesh']['root_namespace']}"
        )
    )
    applied = doc.get("telemetry", {}).get("applied", [])
    chain = " -> ".join(f"{a['scope']}: {a['resource']}" for a in applied) or "none"
    console.print(Text(f"Telemetry applied (in order): {chain}"))
    for item in doc.get("telemetry", {}).get("ignored", []):
        console.print(f"  [yellow]ignored[/yellow] {escape(item['resource'])}: {escape(item['reason'])}")


def _tracing_table(doc: dict[str, Any]) -> Table:
    """One row per setting; client and server on one line when they agree."""
    sources = doc["sources"]
    table = Table(
        title="Tracing (client = outbound, server = inbound)", title_justify="left", show_lines=True
    )
    for col in ("setting", "value", "source"):
        table.add_column(col, overflow="fold")
    for key, label in _ROWS:
        values, srcs = {}, {}
        for d in ("client", "server"):
            values[d] = _value(key, doc["tracing"][d][key])
            name = f"tracing.{d}.{key}" if key != "provider" else f"tracing.{d}.provider.name"
            srcs[d] = source_text(sources.get(name))
            if key == "provider" and sources.get(f"tracing.{d}.provider"):
                srcs[d] += f"; defined by {source_text(sources[f'tracing.{d}.provider'])}"
        same = values["client"] == values["server"] and srcs["client"] == srcs["server"]
        if same:
            table.add_row(Text(label), Text(values["client"]), Text(srcs["client"]))
        else:
            table.add_row(
                Text(label),
                Text(f"client: {values['client']}\nserver: {values['server']}"),
                Text(f"client: {srcs['client']}\nserver: {srcs['server']}"),
            )
    return table


def _render_metrics(doc: dict[str, Any], console: Console) -> None:
    """The metric overrides per direction, or one line when there are none."""
    metrics, sources = doc["metrics"], doc["sources"]
    mt = Table(
        title=f"Metrics (prometheus {'on' if metrics['enabled'] else 'off'}, "
        f"{escape(source_text(sources.get('metrics.enabled')))})",
        title_justify="left",
    )
    for col in ("direction", "metric", "override", "source"):
        mt.add_column(col, overflow="fold")
    for direction in ("client", "server"):
        if metrics["enabled"] and not metrics.get(f"{direction}_enabled", True):
            # ALL_METRICS disabled for this direction only: its per-metric overrides do nothing.
            source = sources.get(f"metrics.{direction}_enabled")
            mt.add_row(direction, "ALL_METRICS", "disabled", Text(source_text(source)))
            continue
        for metric, cfg in metrics[direction].items():
            where = f"metrics.{direction}.{metric}"
            if cfg["disabled"]:
                mt.add_row(direction, metric, "disabled", Text(source_text(sources.get(f"{where}.disabled"))))
            for tag, override in cfg["tag_overrides"].items():
                text = (
                    f"{tag}: REMOVE" if override["operation"] == "REMOVE" else f"{tag} = {override['value']}"
                )
                source = sources.get(f"{where}.tag_overrides.{tag}")
                mt.add_row(direction, metric, Text(text), Text(source_text(source)))
    if mt.row_count:
        console.print(mt)
    else:
        console.print(f"Metrics: prometheus {'on' if metrics['enabled'] else 'off'}, no overrides")


def render_security(sec: dict[str, Any], console: Console) -> None:
    """Identity, inbound mTLS mode per port, authorization and client TLS, each with its source."""
    pa = sec["peer_authentication"]
    console.print(Text(f"Identity: {sec['identity']}"))
    table = Table(title="Security", box=None, header_style="bold", title_justify="left")
    for column in ("setting", "value", "from"):
        table.add_column(column)
    table.add_row("inbound mTLS", pa["mode"], Text(pa["source"]))
    for port, mode in sorted(pa["ports"].items()):
        table.add_row(f"inbound mTLS port {port}", mode["mode"], Text(mode["source"]))
    for policy in sec["authorization"]:
        table.add_row(
            f"authorization ({policy['scope']})",
            f"{policy['action']}, {len(policy['rules'])} rule(s)",
            Text(policy["name"]),
        )
    if not sec["authorization"]:
        table.add_row("authorization", "allow all", Text("no AuthorizationPolicy applies"))
    for host, tls in sorted(sec["destinations"].items()):
        ports = "".join(f", port {p}: {m}" for p, m in sorted(tls["ports"].items()))
        table.add_row(f"client TLS to {host}", f"{tls['mode'] or 'auto'}{ports}", Text(tls["source"]))
    table.add_row(
        "client TLS to other mesh hosts", "auto mTLS", Text("Istio default (no DestinationRule tls)")
    )
    console.print(table)
