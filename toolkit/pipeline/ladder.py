"""The rungs of the `--precisions auto` ladder, cheapest first, per format (see `budget`).

The corrected int8 rungs that cost the same (bias correction, equalization, both, and the
activation-range searches: only biases, channel scales or quantization parameters change;
under a minute each on a 96-px MobileNet) form one tier:
`budget.search` measures all of them and keeps the best inside the budget, since
cheapest-first cannot order rungs of equal cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.convert import BY_NAME, Format, convert
from toolkit.core.progress import console

SENSITIVE_STEPS = (1, 3)  # how many of the most sensitive layers/nodes to keep float, in turn
EQUAL_COST = "corrected int8"  # the tier of CORRECTED's rungs


@dataclass
class Rung:
    name: str  # artifact name in the format table, e.g. "tflite-int8"
    label: str  # what the rung is, e.g. "int8, 3 most sensitive layers float"
    options: dict[str, Any] = field(default_factory=dict)
    tier: str | None = None  # rungs of one tier cost the same: the best within budget wins

    @property
    def fmt(self) -> Format:
        return BY_NAME[self.name]


def _tflite_sensitive(model: Any, calibration: np.ndarray, granularity: str | None) -> list[str]:
    from toolkit.convert.tflite import layer_sensitivity

    rows = layer_sensitivity(model, calibration, granularity=granularity or "per-channel")
    return [r["tensor_name"] for r in rows if np.isfinite(r["rmse_over_scale"])]


def built_key(name: str, options: dict[str, Any]) -> tuple[str, str]:
    return name, repr(sorted(options.items()))


def _onnx_sensitive(
    model: Any,
    calibration: np.ndarray,
    scratch: Path,
    granularity: str | None,
    built: dict[tuple[str, str], Path],
) -> tuple[list[str], str]:
    """Quantized Conv/MatMul/Gemm nodes, most sensitive first (measured on the ladder's plain
    int8 at its granularity, converted again only if the ladder did not build it; see
    `onnx_sensitivity`), and how they were ranked. If the measurement fails, the last nodes
    first: output layers are usually the most sensitive."""
    import onnx

    from toolkit.convert.onnx_sensitivity import QUANTIZABLE, node_sensitivity

    options = {"granularity": granularity} if granularity else {}
    try:
        probe = built.get(built_key("onnx-int8", options)) or convert(
            model, BY_NAME["onnx-int8"], scratch / "probe-int8", calibration=calibration,
            **options,
        )  # fmt: skip
        return [r["node"] for r in node_sensitivity(probe, calibration)], "most sensitive"
    except Exception as err:  # ranking is an optimisation; the rungs still run unranked
        console.print(f"  onnx node sensitivity not measured ({str(err)[:120]}); last nodes "
                      "first", highlight=False, markup=False)  # fmt: skip
    fp32 = convert(model, BY_NAME["onnx-fp32"], scratch / "probe")
    graph = onnx.load(str(fp32)).graph
    nodes = [n.name for n in reversed(graph.node) if n.op_type in QUANTIZABLE and n.name]
    return nodes, "last"


# Same size and latency as plain int8, so they come before anything that keeps float; one
# tier, each built in under a minute, the best within budget wins (none is best on every model:
# RESULTS.md, "PTQ: cross-layer equalization with fixed-channel scales"). AdaRound, minutes of
# optimisation on a MobileNet, only when none of them is within.
CORRECTED = [
    ("full int8, bias-corrected weights (same size and latency)", {"bias_correction": True}),
    ("full int8, equalized weights (same size and latency)", {"equalize": True}),
    ("full int8, equalized + bias-corrected weights (same size and latency)",
     {"equalize": True, "bias_correction": True}),
]  # fmt: skip
ADAROUND = ("full int8, AdaRound-rounded + bias-corrected weights (same size and latency)",
            {"adaround": True, "bias_correction": True})  # fmt: skip


def corrected_options(name: str) -> list[tuple[str, dict[str, Any]]]:
    """The equal-cost tier of one int8 artifact: CORRECTED, then each activation-range search
    its exporter takes (toolkit.convert.methods; only the quantization parameters change).
    The range rungs earned their place on the vision transformer, where percentile ranges
    lift plain int8's 18.6 dB to 25.3 (RESULTS.md, "PTQ: a small vision transformer")."""
    from toolkit.convert.methods import METHODS

    fmt = BY_NAME[name].format
    ranges = [(f"full int8, {m.description} (same size and latency)", dict(m.options))
              for m in METHODS.values()
              if set(m.options) == {"ranges"} and fmt in m.formats and m.in_ladder]  # fmt: skip
    return [*CORRECTED, *ranges]


def _corrected(name: str) -> Iterator[Rung]:
    for label, options in corrected_options(name):
        yield Rung(name, label, dict(options), EQUAL_COST)
    yield Rung(name, ADAROUND[0], dict(ADAROUND[1]))


def _kept_float(name: str, ranked: list[str], option: str, label: str) -> Iterator[Rung]:
    """int8 with the 1, then 3 first of `ranked` kept float (`label` takes {k} and {names})."""
    for k in SENSITIVE_STEPS:
        if k <= len(ranked):
            keep = ranked[:k]
            yield Rung(name, label.format(k=k, names=", ".join(keep)), {option: keep})


@dataclass(frozen=True)
class Quant:
    """How every rung quantizes: weight granularity (None: per channel) and a forced PTQ
    method (None: the ladder tries plain int8, then its corrected rungs)."""

    granularity: str | None = None
    method: str | None = None

    def apply(self, rung: Rung) -> Rung:
        from toolkit.convert.methods import get_method, takes_method

        options, label = dict(rung.options), rung.label
        if self.granularity and rung.fmt.precision not in ("fp32", "fp16"):
            options["granularity"] = self.granularity
        if self.method is not None and takes_method(rung.fmt):
            options.update(get_method(self.method).options)
            label = f"{label} [--ptq {self.method}]"
        return Rung(rung.name, label, options, rung.tier)


def tflite_rungs(
    model: Any,
    calibration: np.ndarray,
    float_io: bool = True,
    corrected: bool = True,
    granularity: str | None = None,
) -> Iterator[Rung]:
    """The TFLite ladder; `float_io=False` (a device that takes integer I/O only) skips the
    sensitivity analysis, whose rungs all have float I/O; `corrected=False` (a forced
    method) skips the corrected int8 rungs; layers are ranked at the ladder's `granularity`
    (a layer per-tensor weights hurt may be harmless per channel)."""
    yield Rung("tflite-int8", "full int8, int8 input/output")
    if corrected:
        yield from _corrected("tflite-int8")
    yield Rung("tflite-int8-float-io", "int8 internals, float input/output")
    sensitive = _tflite_sensitive(model, calibration, granularity) if float_io else []
    yield from _kept_float("tflite-int8-float-io", sensitive, "denylisted_nodes",
                           "int8 with the {k} most sensitive layer(s) float: {names}")  # fmt: skip
    for precision in ("int16x8", "dynamic", "fp16", "fp32"):
        yield Rung(f"tflite-{precision}", BY_NAME[f"tflite-{precision}"].description)


def onnx_rungs(
    model: Any,
    scratch: Path,
    corrected: bool = True,
    calibration: np.ndarray | None = None,
    granularity: str | None = None,
    built: dict[tuple[str, str], Path] | None = None,
) -> Iterator[Rung]:
    """The ONNX ladder; nodes are ranked (measured, at `granularity`) only once the ladder
    gets past the full-int8 rungs, so a model whose int8 is fine never pays for it; `built`
    (filled by `search` as it converts) lends the plain int8 to the ranking."""
    yield Rung("onnx-int8", "static QDQ int8")
    if corrected:
        yield from _corrected("onnx-int8")
    nodes, how = _onnx_sensitive(model, calibration, scratch, granularity, built or {})
    yield from _kept_float("onnx-int8", nodes, "nodes_to_exclude",
                           f"int8 with the {how} {{k}} node(s) float: {{names}}")  # fmt: skip
    for precision in ("dynamic", "fp16", "fp32"):
        yield Rung(f"onnx-{precision}", BY_NAME[f"onnx-{precision}"].description)
