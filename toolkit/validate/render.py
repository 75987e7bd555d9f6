"""Views of a validation report: markdown (report.md), a rich table, and a trade-off plot.

The rows are the same in every view: the reference first, then every artifact x runtime, each
plain artifact followed by its optimized variants (with a section comparing them), sizes human
readable and failures shown rather than hidden.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.core.report import human_bytes

if TYPE_CHECKING:
    from toolkit.core.report import ArtifactResult, Report

HEADERS = (
    "artifact",
    "runtime/provider",
    "metric",
    "drop",
    "agreement",
    "max abs diff",
    "size",
    "gzip",
    "p50/p90 ms",
    "flags",
)


def _num(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _row(row: ArtifactResult) -> list[str]:
    metric = row.metric
    latency = row.latency_ms
    return [
        row.name,
        row.where,
        f"{metric['name']} {_num(metric.get('value'))}",
        _drop_text(row),
        _num(row.agreement, ".3f"),
        _num(row.max_abs_diff, ".2e"),
        human_bytes(row.size_bytes),
        human_bytes(row.gzip_bytes),
        "n/a" if not latency else f"{latency['p50']:.3f} / {latency['p90']:.3f}",
        "; ".join(row.flags) or ("error" if row.error else ""),
    ]


def _drop_text(row: ArtifactResult) -> str:
    """The drop, marked `~` when it is within noise at this sample size (not significant)."""
    text = _num(row.drop, "+.4f")
    return f"{text} ~" if row.drop and row.significant is False else text


def ordered(report: Report) -> list[ArtifactResult]:
    """The reference first, then each plain artifact followed by its optimized variants
    (tflite-int8, prune-tflite-int8, ...), runtimes in report order: what to compare is adjacent."""
    ref_name = report.reference["name"]
    bases = list(dict.fromkeys(a.base_name for a in report.artifacts))
    tags = list(dict.fromkeys(a.variant for a in report.artifacts if a.variant))

    def key(a: ArtifactResult) -> tuple[bool, int, int]:
        rank = tags.index(a.variant) + 1 if a.variant else 0
        return a.name != ref_name, bases.index(a.base_name), rank

    return sorted(report.artifacts, key=key)


def _ratio(new: float | None, old: float | None) -> float | None:
    return None if new is None or not old else new / old


def comparisons(report: Report) -> list[dict[str, Any]]:
    """Each optimized row against its plain twin (same artifact, runtime and provider).

    `delta` is optimized minus plain metric (positive = better for higher-is-better metrics);
    size, gzip and p50 are optimized / plain ratios. Failed rows have no comparison.
    """
    plain = {(a.name, a.runtime, a.provider): a for a in report.artifacts if not a.variant}
    out = []
    for a in ordered(report):
        twin = plain.get((a.base_name, a.runtime, a.provider)) if a.variant else None
        if twin is None or a.error or twin.error:
            continue
        value, base = a.metric.get("value"), twin.metric.get("value")
        p50 = (a.latency_ms or {}).get("p50"), (twin.latency_ms or {}).get("p50")
        out.append({
            "name": a.name, "base": twin.name, "variant": a.variant, "where": a.where,
            "metric": (base, value),
            "delta": None if value is None or base is None else value - base,
            "size": _ratio(a.size_bytes, twin.size_bytes),
            "gzip": _ratio(a.gzip_bytes, twin.gzip_bytes),
            "p50": _ratio(*p50),
        })  # fmt: skip
    return out


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _comparison_markdown(report: Report) -> list[str]:
    rows = comparisons(report)
    if not rows:
        return []
    metric = report.metric_name
    lines = [
        "## What optimization bought",
        "",
        f"Each optimized artifact against the plain one converted the same way, in the same "
        f"runtime (drop above is against the dense Keras reference). Delta: optimized minus "
        f"plain {metric}; ratios: optimized / plain.",
        "",
        f"| optimized | vs | runtime/provider | {metric} plain -> optimized | delta | size | gzip "
        "| p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        base, value = c["metric"]
        lines.append(
            f"| {c['name']} | {c['base']} | {c['where']} | {_num(base)} -> {_num(value)} | "
            f"{_num(c['delta'], '+.4f')} | {_x(c['size'])} | {_x(c['gzip'])} | {_x(c['p50'])} |"
        )
    return lines


def table_rows(report: Report) -> list[list[str]]:
    """The reference first (its own row when no artifact is the Keras model), then the rest."""
    ref = report.reference
    rows = [_row(a) for a in report.artifacts if a.name == ref["name"]]
    if not rows:
        metric = ref["metric"]
        rows.append(
            [
                f"{ref['name']} (reference)",
                "keras",
                f"{metric['name']} {_num(metric['value'])}",
                "0",
                "1.000",
                "0",
                "",
                "",
                "",
                "",
            ]
        )
    rows += [_row(a) for a in ordered(report) if a.name != ref["name"]]
    return rows


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def to_markdown(report: Report) -> str:
    ref = report.reference
    metric = ref["metric"]
    direction = "higher is better" if report.higher_is_better else "lower is better"
    data = report.data or {}
    lines = [
        "# Validation report",
        "",
        f"Reference: **{ref['name']}**, {metric['name']} {_num(metric['value'])} ({direction}) on "
        f"{data.get('name', 'held-out data')} ({data.get('samples', '?')} samples). "
        f"Created {report.created}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" for _ in HEADERS) + "|",
    ]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table_rows(report)]
    lines += [
        "",
        "Drop: reference minus artifact for higher-is-better metrics, artifact minus "
        "reference for lower-is-better; positive = worse. `~`: within noise at this sample size "
        "(the paired-bootstrap 95 % interval holds 0, or McNemar p >= 0.05). Latency: batch 1.",
    ]
    noisy = _noise_lines(report)
    if noisy:
        lines += ["", "## Drops and noise", "", *noisy]
    comparison = _comparison_markdown(report)
    if comparison:
        lines += ["", *comparison]
    failed = [a for a in report.artifacts if a.error]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- `{a.name}` on {a.where}: {a.error}" for a in failed]
    if report.budget:
        lines += ["", *_budget_markdown(report.budget)]
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items() if v)
    lines += ["", f"Versions: {versions}", ""]
    return "\n".join(lines)


def _noise_lines(report: Report) -> list[str]:
    """One line per artifact row with a non-zero drop: its interval, p-value and verdict."""
    lines = []
    for row in report.artifacts:
        if not row.drop or row.drop_ci95 is None:
            continue
        lo, hi = row.drop_ci95
        p = f", McNemar p {row.mcnemar_p:.3g}" if row.mcnemar_p is not None else ""
        verdict = "significant" if row.significant else "within noise"
        lines.append(
            f"- `{row.name}` on {row.where}: drop {row.drop:+.4f}, 95 % interval "
            f"[{lo:+.4f}, {hi:+.4f}]{p}: {verdict} at {report.data.get('samples', '?')} samples"
        )
    return lines


def _budget_markdown(budget: dict[str, Any]) -> list[str]:
    """The ladder the budget search walked, per format (`budget.formats.<fmt>`), rung by rung."""
    split = budget.get("split", "validation")
    lines = [
        "## Accuracy budget",
        "",
        f"Max drop {budget.get('max_drop')}"
        + (f", min SQNR {budget['min_sqnr']} dB" if budget.get("min_sqnr") is not None else "")
        + (f", must fit {budget['fits']}" if budget.get("fits") else "")
        + f", measured on the {split} split.",
    ]
    for fmt, result in (budget.get("formats") or {}).items():
        lines += ["", f"### {fmt}: chosen **{result.get('chosen') or 'none within budget'}**"]
        ladder = result.get("ladder") or []
        if not ladder:
            continue
        lines += ["", "| rung | artifact | metric | drop | within | reason |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for step in ladder:
            drop, metric = step.get("drop"), step.get("metric")
            reason = step.get("reason") or (f"failed: {step['error']}" if step.get("error") else "")
            lines.append(
                f"| {_escape(str(step.get('rung', '')))} | {step.get('name', '')} | "
                f"{_num(metric) if isinstance(metric, (int, float)) else 'n/a'} | "
                f"{_num(drop, '+.4f') if isinstance(drop, (int, float)) else 'n/a'} | "
                f"{'**chosen**' if step.get('chosen') else 'yes' if step.get('within') else 'no'} "
                f"| {_escape(str(reason))} |"
            )
    return lines


_SHORT = {"onnxruntime": "ort", "tensorflow": "tf", "reference": "ref"}


def _short_where(row: ArtifactResult) -> str:
    """'onnxruntime/CPUExecutionProvider' -> 'ort/cpu': the table must fit 80 columns."""
    provider = row.provider.removesuffix("ExecutionProvider").lower() or row.provider
    return f"{_SHORT.get(row.runtime, row.runtime)}/{_SHORT.get(provider, provider)}"


def print_table(report: Report) -> None:
    """A compact table on the terminal (stderr); flags and errors are listed below it.

    Max abs diff and p90 appear when the terminal is wide enough; report.md has everything.
    """
    from rich.table import Table

    from toolkit.core.progress import console

    ref = report.reference
    metric = ref["metric"]
    wide = console.width >= 100
    table = Table(
        title=f"{metric['name']} vs {ref['name']} {_num(metric['value'])} "
        f"({report.data.get('samples', '?')} samples)",
        header_style="bold",
        box=None,
        padding=(0, 1, 0, 0),
    )
    headers = ["artifact", "runtime", metric["name"], "drop", "agree", "size", "gzip", "p50 ms"]
    headers += ["p90 ms", "max diff"] if wide else []
    for header in headers:
        table.add_column(
            header, justify="left" if header in ("artifact", "runtime") else "right", no_wrap=True
        )
    rows = ordered(report)
    for a in rows:
        latency = a.latency_ms or {}
        cells = [
            a.name,
            _short_where(a),
            _num(a.metric.get("value")),
            _num(a.drop, "+.4f"),
            _num(a.agreement, ".3f"),
            human_bytes(a.size_bytes),
            human_bytes(a.gzip_bytes),
            _num(latency.get("p50"), ".3f"),
        ]
        cells += [_num(latency.get("p90"), ".3f"), _num(a.max_abs_diff, ".1e")] if wide else []
        table.add_row(*cells, style="red" if a.error else ("yellow" if a.flags else None))
    console.print(table)
    for a in rows:
        for note in [*a.flags, *([a.error] if a.error else [])]:
            console.print(f"  {a.name} {_short_where(a)}: {note}", highlight=False, markup=False)
    shown: set[str] = set()
    for c in comparisons(report):  # one line per optimized artifact, its first runtime
        if c["name"] in shown:
            continue
        shown.add(c["name"])
        console.print(
            f"  {c['name']} vs {c['base']} ({c['where']}): {metric['name']} "
            f"{_num(c['delta'], '+.4f')}, size {_x(c['size'])}, gzip {_x(c['gzip'])}, "
            f"p50 {_x(c['p50'])}", highlight=False, markup=False,
        )  # fmt: skip


def plot(report: Report, path: Path) -> Path:
    """Metric vs size (log x), colour = p50 latency: the trade-off picture for choosing a model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from toolkit.core.rundir import atomic_path

    metric = report.metric_name
    rows = [a for a in report.artifacts if not a.error and a.metric.get("value") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    if rows:
        _scatter(fig, ax, rows)
        ax.set_xscale("log")
        # Powers of two read as round sizes (32 KiB, 1 MiB) where decades would give 97.7 KiB.
        ax.xaxis.set_major_locator(LogLocator(base=2, numticks=8))
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda v, _: human_bytes(round(v)).replace(".0 ", " "))
        )
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.25, y=0.15)
    else:
        ax.text(0.5, 0.5, "no artifact ran successfully", ha="center", transform=ax.transAxes)
    ref_value = report.reference["metric"].get("value")
    if ref_value is not None:
        ax.axhline(ref_value, color="grey", linestyle="--", linewidth=1, label="keras reference")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("artifact size (log scale)")
    ax.set_ylabel(metric + ("" if report.higher_is_better else " (lower is better)"))
    ax.set_title(f"{metric} vs size vs latency")
    ax.grid(alpha=0.3, which="both")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _scatter(fig: Any, ax: Any, rows: list[ArtifactResult]) -> None:
    # One file measured in several runtimes sits at one (size, metric) point: nudge the repeats
    # sideways so each latency colour shows, and label the group once.
    groups: dict[tuple[int, float], list[ArtifactResult]] = {}
    for a in rows:
        groups.setdefault((max(a.size_bytes, 1), round(a.metric["value"], 9)), []).append(a)
    xs, ys, colours = [], [], []
    for (size, value), members in groups.items():
        for k, a in enumerate(members):
            xs.append(size * 1.04**k)
            ys.append(value)
            colours.append(a.latency_ms["p50"] if a.latency_ms else float("nan"))
        label = ", ".join(dict.fromkeys(a.name for a in members))
        label += "\n" + ", ".join(_short_where(a) for a in members)
        ax.annotate(label, (size, value), textcoords="offset points", xytext=(6, 5), fontsize=7)
    points = ax.scatter(xs, ys, c=colours, cmap="viridis", s=60, edgecolors="black", zorder=3)
    if any(a.latency_ms for a in rows):
        fig.colorbar(points, ax=ax, label="p50 latency, batch 1 (ms)")


def save_report(report: Report, out_dir: str | Path) -> Path:
    """Write report.json, report.md and plots/report.png into `out_dir`; return report.json."""
    from toolkit.core.rundir import atomic_write_text

    out_dir = Path(out_dir)
    path = report.write_json(out_dir)
    atomic_write_text(out_dir / "report.md", to_markdown(report))
    plot(report, out_dir / "plots" / "report.png")
    return path
