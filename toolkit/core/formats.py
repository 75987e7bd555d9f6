"""The one table of export artifacts: it drives CLI flags, the exporters and validation rows.

Adding an artifact means adding a row here and, if its format is new, an exporter in
`toolkit.convert.EXPORTERS`. Nothing in this module imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from toolkit.core.errors import UserError, suggest


@dataclass(frozen=True)
class Format:
    """One artifact kind: a file format at one precision."""

    name: str  # e.g. "tflite-int8": the artifact name used in reports and file names
    format: str  # "tflite" | "onnx" | "keras"
    precision: str  # "fp32" | "fp16" | "dynamic" | "int8" | "int8-float-io" | "uint8" | "int16x8"
    suffix: str  # file suffix, with the dot
    needs_calibration: bool  # full-integer precisions need representative inputs
    description: str

    @property
    def filename(self) -> str:
        """The artifact's file name inside an export directory."""
        return "model.keras" if self.format == "keras" else f"model-{self.precision}{self.suffix}"

    @property
    def runtime(self) -> str:
        """The runtime that runs this artifact."""
        return {"tflite": "litert", "onnx": "onnxruntime", "keras": "keras"}[self.format]


def _row(fmt: str, precision: str, suffix: str, calib: bool, description: str) -> Format:
    return Format(f"{fmt}-{precision}", fmt, precision, suffix, calib, description)


FORMATS: tuple[Format, ...] = (
    _row("keras", "fp32", ".keras", False, "the trained Keras model itself (the reference)"),
    _row("tflite", "fp32", ".tflite", False, "float32 TFLite; the conversion baseline"),
    _row("tflite", "fp16", ".tflite", False, "float16 weights, float compute; ~2x smaller"),
    _row("tflite", "dynamic", ".tflite", False, "int8 weights, float activations; no calibration"),
    _row("tflite", "int8", ".tflite", True,
         "full integer with int8 input/output; microcontrollers, NPUs, fastest on Arm CPUs"),
    _row("tflite", "int8-float-io", ".tflite", True,
         "full-integer internals with float input/output; drop-in replacement for fp32"),
    _row("tflite", "uint8", ".tflite", True,
         "full integer with uint8 input/output; what the Coral Edge TPU compiler wants"),
    _row("tflite", "int16x8", ".tflite", True,
         "int16 activations, int8 weights; more accurate than int8, fewer kernels"),
    _row("onnx", "fp32", ".onnx", False, "float32 ONNX; any execution provider"),
    _row("onnx", "fp16", ".onnx", False, "float16 weights and compute, float32 input/output"),
    _row("onnx", "int8", ".onnx", True, "static QDQ int8, per-channel weights (quantize_static)"),
    _row("onnx", "dynamic", ".onnx", False, "int8 weights, activations quantized at run time"),
)  # fmt: skip

BY_NAME: dict[str, Format] = {f.name: f for f in FORMATS}


def format_names() -> list[str]:
    """The file formats, in table order (e.g. for a `--format` flag)."""
    return list(dict.fromkeys(f.format for f in FORMATS))


def precisions_of(fmt: str) -> list[str]:
    """The precisions a file format offers, in table order."""
    return [f.precision for f in FORMATS if f.format == fmt]


def all_precisions() -> list[str]:
    """Every precision any format offers, in table order (e.g. for a `--precision` flag)."""
    return list(dict.fromkeys(f.precision for f in FORMATS))


def get(name: str) -> Format:
    """Look up an artifact by name ("tflite-int8"); a UserError suggests the closest name."""
    if name in BY_NAME:
        return BY_NAME[name]
    raise UserError(
        f"unknown artifact {name!r}{suggest(name, BY_NAME)}; known: {', '.join(BY_NAME)}"
    )


def _check_known(kind: str, given: Iterable[str], known: list[str]) -> None:
    for name in given:
        if name not in known:
            raise UserError(
                f"unknown {kind} {name!r}{suggest(name, known)}; known: {', '.join(known)}"
            )


def select(formats: list[str] | None = None, precisions: list[str] | None = None) -> list[Format]:
    """The artifacts for the requested formats x precisions, failing early on bad requests.

    None means "all". A precision named explicitly must exist for every format named explicitly
    (asking for onnx at int16x8 is a mistake, not a request to skip it); with formats left at
    None, each precision is taken from the formats that offer it. Artifact names
    ("tflite-int8") are accepted in `formats` too.
    """
    picked_by_name = [get(n) for n in formats or [] if "-" in n]
    plain = [n for n in formats or [] if "-" not in n]
    if picked_by_name and precisions is not None:
        raise UserError(
            "give artifact names (e.g. tflite-int8) or formats with precisions, not both; "
            f"got formats {formats} and precisions {precisions}"
        )
    if picked_by_name and not plain:
        return list(dict.fromkeys(picked_by_name))
    _check_known("format", plain, format_names())
    _check_known("precision", precisions or [], all_precisions())
    chosen_formats = plain or format_names()
    for fmt in plain:
        if fmt == "keras":  # the passthrough reference has one precision; precisions don't apply
            continue
        for precision in precisions or []:
            if precision not in precisions_of(fmt):
                raise UserError(
                    f"{fmt} has no {precision} precision; {fmt} precisions: "
                    f"{', '.join(precisions_of(fmt))}"
                )
    result = [
        f
        for f in FORMATS
        if f.format in chosen_formats
        and (precisions is None or f.precision in precisions or f.format == "keras")
    ]
    if precisions is not None and not result:
        raise UserError(f"no artifact matches precisions {', '.join(precisions)}")
    return list(dict.fromkeys([*picked_by_name, *result]))


def help_table() -> str:
    """A plain-text table of every artifact, for `--help` and `keras-edge export --list`."""
    width = max(len(f.name) for f in FORMATS)
    lines = [
        f"{f.name:<{width}}  {'calib' if f.needs_calibration else '     '}  {f.description}"
        for f in FORMATS
    ]
    return "\n".join(lines)
