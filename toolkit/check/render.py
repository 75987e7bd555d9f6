"""Views of a regression check: a rich diff table, JUnit XML and markdown for CI summaries.

Every view shows the same rows with the same formatting (sizes human readable, parity in
scientific notation), failures first in the markdown so a CI summary leads with what broke.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from toolkit.core.report import human_bytes

if TYPE_CHECKING:
    from toolkit.check.stage import CheckResult, CheckRow

HEADERS = ("artifact", "check", "baseline", "current", "delta", "limit", "status")
STATUS_TEXT = {"pass": "ok", "fail": "FAIL", "skip": "skip", "new": "new"}
STATUS_STYLE = {"pass": "green", "fail": "bold red", "skip": "dim", "new": "yellow"}


def _value(row: CheckRow, value: float | None) -> str:
    if row.check == "present":
        return {1.0: "present", 0.0: "missing"}.get(value, "") if value is not None else ""
    if value is None:
        return "" if row.status == "skip" else "n/a"
    if row.check == "size":
        return human_bytes(int(value))
    if row.check == "max_abs_diff":
        return f"{value:.2e}"
    return f"{value:.4f}"


def cells(row: CheckRow, metric_name: str) -> list[str]:
    """The seven display cells of a row, shared by the table and the markdown."""
    baseline = "" if row.status == "new" else _value(row, row.baseline)
    current = "present" if row.status == "new" else _value(row, row.current)
    if row.check == "present" and row.status == "fail" and "failed" in row.message:
        current = "failed"
    delta = ""
    if row.delta is not None and row.check != "present":
        if row.check == "size" and row.baseline:
            delta = f"{row.delta / row.baseline:+.1%}"
        elif row.check == "max_abs_diff":
            delta = f"{row.delta:+.1e}"
        else:
            delta = f"{row.delta:+.4f}"
    limit = ""
    if row.limit is not None:
        op = "≥" if row.limit_op == ">=" else "≤"
        limit = f"{op} {_value(row, row.limit)}"
    check = metric_name if row.check == "metric" else row.check.replace("_", " ")
    return [row.subject, check, baseline, current, delta, limit, STATUS_TEXT[row.status]]


_SHORT = {"onnxruntime": "ort", "tensorflow": "tf", "reference": "ref"}
_CHECK_SHORT = {"present": "present", "max_abs_diff": "max diff"}


def short_where(where: str) -> str:
    """'onnxruntime/CPUExecutionProvider' -> 'ort/cpu': the table must fit 80 columns."""
    if "/" not in where:
        return where
    runtime, provider = where.split("/", 1)
    provider = provider.removesuffix("ExecutionProvider").lower() or provider
    return f"{_SHORT.get(runtime, runtime)}/{_SHORT.get(provider, provider)}"


def print_table(result: CheckResult) -> None:
    """The diff table on stderr (stdout stays clean), then notes, regressions and tolerances."""
    from rich.table import Table

    from toolkit.core.progress import console

    table = Table(
        title=f"{result.report_path or 'report'} vs {result.baseline_path or 'baseline'}",
        header_style="bold",
        box=None,
        padding=(0, 1, 0, 0),
    )
    headers = ("artifact", "check", "baseline", "current", "delta", "limit", "")
    for header in headers:
        right = header in ("baseline", "current", "delta", "limit")
        table.add_column(header, justify="right" if right else "left", no_wrap=True)
    groups: dict[tuple[str, str], list[CheckRow]] = {}
    for row in result.rows:
        groups.setdefault((row.artifact, row.where), []).append(row)
    for (artifact, where), rows in groups.items():
        # Name on the first line, runtime on the second: the table fits 80 columns.
        label = [artifact, f"[dim]{short_where(where)}[/]"] if len(rows) > 1 else [
            f"{artifact} [dim]{short_where(where)}[/]"
        ]  # fmt: skip
        for i, row in enumerate(rows):
            shown = cells(row, result.metric_name)
            status = "ok" if row.status == "pass" else shown[-1]
            table.add_row(
                label[i] if i < len(label) else "",
                _CHECK_SHORT.get(row.check, shown[1]),
                *shown[2:6],
                f"[{STATUS_STYLE[row.status]}]{status}[/]",
                end_section=i == len(rows) - 1,
            )
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    for row in result.regressions:
        console.print(f"[bold red]regression:[/] {row.subject}: {row.message}", highlight=False)
    tol = result.tolerances
    console.print(
        f"tolerance {tol.metric:g} ({result.metric_name}, drop, agreement), size growth "
        f"{tol.size_growth:.0%}"
        + (f", per artifact {tol.per_artifact}" if tol.per_artifact else ""),
        highlight=False,
        soft_wrap=True,
    )


def to_junit(result: CheckResult) -> str:
    """JUnit XML: one testcase per artifact x check; failures carry the readable message."""
    gated = result.gated
    failures = sum(r.status == "fail" for r in gated)
    skipped = sum(r.status == "skip" for r in gated)
    counts = {"tests": str(len(gated)), "failures": str(failures), "errors": "0",
              "skipped": str(skipped), "time": "0"}  # fmt: skip
    root = ET.Element("testsuites", {"name": "keras-edge check", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "keras-edge check", **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in (("baseline", result.baseline_path), ("report", result.report_path)):
        ET.SubElement(props, "property", {"name": name, "value": value})
    for row in gated:
        case = ET.SubElement(suite, "testcase", {"classname": row.subject, "name": row.check,
                                                 "time": "0"})  # fmt: skip
        baseline, current, delta, limit = cells(row, result.metric_name)[2:6]
        detail = f"baseline {baseline or 'n/a'}, current {current or 'n/a'}"
        detail += (f", delta {delta}" if delta else "") + (f", limit {limit}" if limit else "")
        if row.status == "fail":
            failure = ET.SubElement(case, "failure", {"message": row.message, "type": "regression"})
            failure.text = f"{row.subject}: {row.message}\n{detail}"
        elif row.status == "skip":
            ET.SubElement(case, "skipped", {"message": row.message or "not measured"})
        else:
            ET.SubElement(case, "system-out").text = detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _md_table(rows: list[CheckRow], metric_name: str) -> list[str]:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        shown = [c.replace("|", "\\|") for c in cells(row, metric_name)]
        if row.status == "fail":
            shown[-1] = "**FAIL**"
        lines.append("| " + " | ".join(shown) + " |")
    return lines


def to_markdown(result: CheckResult) -> str:
    """A CI job summary: verdict, the regressions first, every check folded below."""
    gated = len(result.gated)
    if result.passed:
        head = f"### keras-edge check: passed ({gated} checks)"
    else:
        head = f"### keras-edge check: {len(result.regressions)} regression(s) in {gated} checks"
    lines = [head, "", f"Report `{result.report_path}` against baseline `{result.baseline_path}`."]
    tol = result.tolerances
    lines += ["", f"Tolerance {tol.metric:g} in {result.metric_name} (also drop and agreement), "
              f"size growth {tol.size_growth:.0%}."]  # fmt: skip
    if result.regressions:
        lines += ["", "#### Regressions", ""]
        lines += [f"- **{r.subject}**: {r.message}" for r in result.regressions]
    if result.notes:
        lines += ["", *(f"> note: {n}" for n in result.notes)]
    lines += ["", f"<details><summary>All {len(result.rows)} checks</summary>", ""]
    lines += _md_table(result.rows, result.metric_name)
    lines += ["", "</details>", ""]
    return "\n".join(lines)
