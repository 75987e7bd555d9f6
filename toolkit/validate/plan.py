"""Which artifacts a validation measures, on which runtimes, and on how many samples.

File names tell an artifact's row of the format table; the runtimes registry tells which
(runtime, provider) pairs run it here; a slow runtime sees a deterministic subset.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.core import artifacts as variants
from toolkit.core.errors import UserError
from toolkit.core.formats import BY_NAME, FORMATS, Format
from toolkit.data.evaldata import EvalData

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def artifact_format(path: Path) -> Format:
    """The format-table row an artifact file belongs to, from its file name.

    Export directories name files after the table (`model-int8.tflite`), which is what tells an
    int8 file from an fp32 one; any Keras file is the reference passthrough.
    """
    path = Path(path)
    by_file = {f.filename: f for f in FORMATS}
    if path.name in by_file:
        return by_file[path.name]
    if path.suffix.lower() in KERAS_SUFFIXES:
        return BY_NAME["keras-fp32"]
    variant = variants.parse(path.name)  # an optimized model's twin: prune-int8.tflite
    if variant is not None:
        return variant.fmt
    raise UserError(
        f"cannot tell which artifact {path.name!r} is: export directories name files after the "
        f"format table ({', '.join(by_file)})"
    )


def discover_artifacts(export_dir: Path) -> list[Path]:
    """Every file in `export_dir` the format table knows, in table order, then optimized
    variants (`prune-int8.tflite`)."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UserError(f"export directory not found: {export_dir}")
    found = [export_dir / f.filename for f in FORMATS if (export_dir / f.filename).is_file()]
    found += variants.discover(export_dir)
    if not found:
        expected = ", ".join(f.filename for f in FORMATS)
        raise UserError(f"no artifacts in {export_dir}; expected files named like {expected}")
    return found


def runtimes_for(fmt: Format) -> list[tuple[str, str]]:
    """The (runtime, provider) pairs this artifact runs on here, e.g. LiteRT XNNPACK + reference.

    TFLite runs on both XNNPACK (what ships) and the reference kernels (an independent
    cross-check); ONNX on every available execution provider.
    """
    from toolkit.runtimes import available_runtimes, runs_artifact

    return [
        (rt, provider)
        for rt, provider in available_runtimes()
        if runs_artifact(rt, fmt.format, fmt.precision, fmt.runtime)
    ]


def _parse_runtime_filter(requested: list[str]) -> list[tuple[str, str | None]]:
    """'litert:xnnpack' / 'onnxruntime:cpu' / 'litert' -> (runtime, provider or None); checked."""
    from toolkit.runtimes import available_runtimes
    from toolkit.runtimes.onnxrt import install_hint, resolve_provider

    available = available_runtimes()
    shown = ", ".join(f"{rt}:{p}" for rt, p in available)
    wanted: list[tuple[str, str | None]] = []
    for item in requested:
        runtime, _, provider = item.partition(":")
        runtime = runtime.strip()
        provider_name = provider.strip() or None
        if runtime == "onnxruntime" and provider_name:
            provider_name = resolve_provider(provider_name)
        if not any(rt == runtime and provider_name in (None, p) for rt, p in available):
            hint = install_hint(provider_name) if runtime == "onnxruntime" and provider_name else ""
            raise UserError(f"runtime {item!r} is not available here; available: {shown}{hint}")
        wanted.append((runtime, provider_name))
    return wanted


def _plan(
    paths: list[Path], runtimes: list[str] | None
) -> list[tuple[Path, Format, tuple[str, str]]]:
    wanted = _parse_runtime_filter(runtimes) if runtimes is not None else None
    plan = []
    for path in paths:
        fmt = artifact_format(path)
        for runtime, provider in runtimes_for(fmt):
            if wanted is None or any(runtime == rt and p in (None, provider) for rt, p in wanted):
                plan.append((path, fmt, (runtime, provider)))
    if not plan:
        raise UserError(
            f"none of the artifacts runs on the requested runtimes ({', '.join(runtimes or [])})"
        )
    return plan


# Rows that prove numerics rather than re-measure accuracy, and run far slower than the fastest
# row of the same artifact: they see the first `reference_samples` samples by default.
# (runtime, provider or None for any) -> precisions (None: every precision) and why.
SAMPLED: dict[tuple[str, str | None], tuple[tuple[str, ...] | None, str]] = {
    ("litert", "reference"): (None, "reference kernels, ~30x slower than XNNPACK"),
    ("tflm", None): (None, "TFLite Micro's kernels on the host, ~2x slower than reference"),
    # XNNPACK has no int16x8 kernels: LiteRT's builtin ones run it, ~25x slower than fp32.
    ("litert", "xnnpack"): (("int16x8",), "int16x8 is not delegated to XNNPACK"),
    # DynamicQuantizeLinear takes one activation scale per batch, so batched is not exact and
    # the row runs batch 1: ~10x fp32's per-sample time on MobileNetV2 (183 vs 19 ms).
    ("onnxruntime", None): (("dynamic",), "ORT dynamic int8 runs batch 1, ~10x slower than fp32"),
}


def sampled_reason(combo: tuple[str, str], precision: str) -> str | None:
    """Why this row runs on a subset by default, or None when it runs on every sample."""
    for (runtime, provider), (precisions, why) in SAMPLED.items():
        matches = runtime == combo[0] and provider in (None, combo[1])
        if matches and (precisions is None or precision in precisions):
            return why
    return None


# A subset row's work: `reference_samples` samples of a model up to 100 M multiply-accumulates
# per sample, fewer samples of a bigger one, never fewer than SUBSET_FLOOR. Reference kernels run
# ~1 GMAC/s here: MobileNetV2-1.0-224 (300 M MACs) gets 85 samples, ~32 s per row instead of 96.
SUBSET_MACS = 256 * 100_000_000
SUBSET_FLOOR = 64


def subset_size(limit: int | None, macs: int | None) -> int | None:
    """How many samples a slow row runs on: `limit`, capped by the MAC budget (None: all)."""
    if limit is None or not macs:
        return limit
    return min(limit, max(SUBSET_FLOOR, SUBSET_MACS // int(macs)))


def artifact_macs(path: Path) -> int | None:
    """Multiply-accumulates per sample of a .tflite / .onnx artifact (None when unknown)."""
    from toolkit.core.model_stats import artifact_stats

    try:
        stats = artifact_stats(path)
        return int(stats["macs"]) if stats else None
    except Exception:  # stats are best effort: a foreign graph keeps the plain limit
        return None


def _sampled(
    combo: tuple[str, str], precision: str, data: EvalData, limit: int | None,
    macs: int | None = None,
) -> EvalData | None:  # fmt: skip
    """The subset a slow row runs on, or None for the full data."""
    limit = subset_size(limit, macs)
    if sampled_reason(combo, precision) is None or limit is None or len(data.x) <= limit:
        return None
    return data.head(limit)
