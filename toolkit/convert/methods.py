"""The PTQ methods by name (`--ptq METHOD`): which exporter options each one is, and where it
applies. One table for the CLI, the `--precisions auto` ladder and the report, so a method
is named the same everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.core.errors import UserError, unknown
from toolkit.core.formats import Format


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # exporter options it sets
    formats: tuple[str, ...] = ("tflite", "onnx")  # formats whose exporter takes it
    # a rung of the --precisions auto ladder's equal-cost tier (toolkit.pipeline.ladder)
    in_ladder: bool = True


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("minmax", "min-max activation ranges (the plain converters' int8)"),
    Method("percentile", "percentile activation ranges (the rarest extremes clipped)",
           {"ranges": "percentile"}),
    Method("mse", "activation ranges that minimise the int8 rounding + clipping error",
           {"ranges": "mse"}, ("tflite",)),
    # not a rung: with ORT's KL search it took 166-219 s on vit_tiny where percentile takes
    # 5-6 s for most of its gain (RESULTS.md, "PTQ: a small vision transformer"); our search
    # (kl_ranges.py) is ~0.07 s a tensor, ORT's 4096-bin collection is not re-timed there
    Method("entropy", "KL-divergence (entropy) activation ranges, TensorRT's search",
           {"ranges": "entropy"}, ("onnx",), in_ladder=False),
    Method("bias-correction", "biases absorb the mean output shift of the int8 weights",
           {"bias_correction": True}),
    Method("equalize", "cross-layer equalization of the Keras weights (ReLU6 -> ReLU)",
           {"equalize": True}),
    Method("equalize+bias-correction", "equalization, then bias correction",
           {"equalize": True, "bias_correction": True}),
    Method("adaround", "learned up/down rounding of each weight (AdaRound)",
           {"adaround": True}),
    Method("adaround+bias-correction", "AdaRound, then bias correction",
           {"adaround": True, "bias_correction": True}),
)}  # fmt: skip


def range_methods() -> dict[str, tuple[str, ...]]:
    """Format -> the activation-range methods its exporter takes (min-max first)."""
    return {fmt: ("minmax", *[m.options["ranges"] for m in METHODS.values()
                              if "ranges" in m.options and fmt in m.formats])
            for fmt in ("tflite", "onnx")}  # fmt: skip


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise unknown("--ptq method", name, METHODS)
    return METHODS[name]


def takes_method(fmt: Format) -> bool:
    """Calibrated int8 artifacts are what a PTQ method changes (int16x8 and dynamic: none)."""
    return fmt.needs_calibration and fmt.format != "keras" and fmt.precision != "int16x8"


def check_method(name: str, formats: list[Format]) -> Method:
    """Method `name`, checked against the chosen artifacts: a method with no calibrated int8
    artifact to change, or one a chosen format cannot take, is a UserError."""
    method = get_method(name)
    targets = [f for f in formats if takes_method(f)]
    if not targets:
        raise UserError(f"--ptq {name} changes calibrated int8 artifacts; none is chosen "
                        "(e.g. --precisions int8)")  # fmt: skip
    if wrong := [f.name for f in targets if f.format not in method.formats]:
        raise UserError(
            f"--ptq {name} is not available for {', '.join(wrong)}; it applies to "
            f"{' and '.join(method.formats)} (pick the formats with --formats)"
        )
    return method


def method_of(options: dict[str, Any]) -> str:
    """The method name a set of exporter options is (report.json's `ptq.method`)."""
    keys = ("ranges", "equalize", "adaround", "bias_correction")
    chosen = {k: v for k, v in options.items() if k in keys and v not in (False, None, "minmax")}
    for method in METHODS.values():
        if method.options == chosen:
            return method.name
    return "+".join(f"{k}={v}" for k, v in sorted(chosen.items()))  # a combination of flags
