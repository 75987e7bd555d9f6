"""Rich summary tables printed at the end of a command (to stderr, like progress)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from toolkit.core.progress import console
from toolkit.core.tasks import get_task


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _warning_cell(finding: dict[str, Any]) -> str:
    """A short table cell; the full message is printed under the table."""
    if finding.get("kind") == "collapse":
        first, last = finding["epochs"]
        back = finding.get("recovered_epoch")
        tail = f", recovered at epoch {back}" if back else ", not recovered"
        return f"val at baseline, epochs {first}-{last}{tail}"
    if finding.get("kind") == "input_size":
        return "feature map below 2x2"
    return str(finding.get("kind", "warning"))


def print_train_summary(result: Any) -> None:
    m = result.metrics
    test = m["test"]
    table = Table(title=f"run {result.run_dir}", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("test", justify="right")
    table.add_column("val", justify="right")
    task = get_task(m["task"])
    for key in task.summary_keys:
        table.add_row(key, _fmt(test.get(key)), _fmt(m["val"].get(key)))
    if task.baseline is not None:
        baseline = task.baseline_means
        table.add_row(f"baseline ({baseline})", _fmt(m["baseline"]), "")
    for finding in m.get("warnings") or []:
        table.add_row("[yellow]warning[/]", _warning_cell(finding), "")
    console.print(table)
    for finding in m.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {finding['message']}", highlight=False, soft_wrap=True)
    if m.get("class_weight"):
        weights = ", ".join(f"{k} {v:.2f}" for k, v in m["class_weight"].items())
        console.print(f"class weights (balanced): {weights}", highlight=False)
    console.print(
        f"{m['params']:,} parameters, {m['epochs_run']} epoch(s) in {m['train_seconds']:.0f} s, "
        f"{test['samples']} test samples"
        + (f", {m['skipped_files']} unreadable files skipped" if m.get("skipped_files") else ""),
        highlight=False,
    )
    console.print(
        f"wrote {result.run_dir}/: model.keras input_spec.json recipe.yaml history.csv "
        "metrics.json plots/ logs/",
        highlight=False,
    )
