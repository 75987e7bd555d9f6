"""Bias correction (Nagel et al., 2019, empirical form) on the Keras weights, before conversion.

Rounding a layer's weights to int8 shifts the mean of its outputs: E[W_q x] != E[W x]. With
one scale per tensor, a depthwise conv's narrow channels round to a few levels and the shift
is systematic; after ReLU it no longer averages out, and it compounds layer after layer. This
module simulates the converter's weight quantization (symmetric int8, per channel or per
tensor, on the BatchNorm-folded kernel, as TFLiteConverter and onnxruntime fold it) and its
8-bit min-max rounding of each weighted layer's input in a copy of the model, measures each
layer's output mean shift on the calibration samples, and moves the layer's bias (or its
BatchNorm's moving mean) by minus that shift. Only biases change;
the converter then quantizes the same kernels as before and carries the corrected biases.

Convolution is linear, so the mean output over the samples is the layer applied to the mean
input: a pass records one mean input per layer, not every activation. Upstream corrections
change downstream inputs, so layers are corrected in model order, one pass each (correcting
all layers from one pass, then iterating, diverged on a pretrained MobileNetV1: the shifts
grew 10x per pass). MAX_SAMPLES calibration samples are used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense", "Conv1D")
# Every layer costs one eager pass over these samples (MobileNetV2-224: 53 passes, ~2 min at
# 128). 128 was too few: on vww_transfer_full bias correction alone lost +2.15 pp per channel
# (plain int8: +1.15), +0.35 pp at 256 (bench/ptq_bc_samples.py, RESULTS.md).
MAX_SAMPLES = 256
_BATCH = 32


@dataclass
class Corrected:
    model: Any
    layers: list[str] = field(default_factory=list)  # layers whose bias moved
    skipped: str | None = None
    max_shift: float = 0.0  # largest |correction| in the layer's (BN-folded) output units

    @property
    def summary(self) -> str:
        """What report.json's `ptq.bias_correction` says."""
        if self.skipped:
            return f"skipped: {self.skipped}"
        return f"{len(self.layers)} layers, largest mean shift {self.max_shift:.3g}"


def _walk(model: Any) -> Iterator[Any]:
    """Every layer, nested models' layers included, in model order."""
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            yield from _walk(layer)
        else:
            yield layer


def _consumers(model: Any) -> dict[int, list[Any]]:
    """Layer id -> the layers its output feeds (within each model, nested ones too)."""
    out: dict[int, list[Any]] = {}
    models = [model] + [m for m in _all_models(model) if m is not model]
    for m in models:
        for layer in getattr(m, "layers", []):
            for node in getattr(layer, "_inbound_nodes", []):
                for parent in getattr(node, "parent_nodes", []):
                    op = getattr(parent, "operation", None)
                    if op is not None:
                        out.setdefault(id(op), []).append(layer)
    return out


def _all_models(model: Any) -> Iterator[Any]:
    yield model
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            yield from _all_models(layer)


@dataclass
class _Site:
    layer: Any
    bn: Any  # the BatchNormalization right after it (folded by the converters), or None
    fold: np.ndarray  # per output channel: gamma / sqrt(var + eps), or ones


def _sites(model: Any, biased_only: bool = True) -> list[_Site]:
    """The weighted layers in model order, with the BatchNorm the converters fold into each;
    `biased_only` (bias correction): only those with a bias or BatchNorm to move."""
    consumers = _consumers(model)
    sites = []
    for layer in _walk(model):
        if type(layer).__name__ not in WEIGHTED or not layer.weights:
            continue
        kernel = np.asarray(layer.get_weights()[0])
        channels = _out_view(layer, kernel).shape[-1]
        after = consumers.get(id(layer), [])
        single = after[0] if len(after) == 1 else None
        bn = single if type(single).__name__ == "BatchNormalization" else None
        fused = getattr(getattr(layer, "activation", None), "__name__", "linear")
        if fused != "linear":
            bn = None  # an activation between them: the converters do not fold it
        fold = np.ones(channels, np.float32)
        if bn is not None:
            gamma = bn.gamma.numpy() if bn.gamma is not None else np.ones(channels, np.float32)
            fold = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        if biased_only and not getattr(layer, "use_bias", False) and bn is None:
            continue  # no bias to move
        sites.append(_Site(layer, bn, fold.astype(np.float32)))
    return sites


def _out_view(layer: Any, kernel: np.ndarray) -> np.ndarray:
    """The kernel with output channels on the last axis (depthwise: channels x multiplier)."""
    if type(layer).__name__ == "DepthwiseConv2D":
        return kernel.reshape(*kernel.shape[:2], -1)
    return kernel


def weight_scale(kernel: np.ndarray, per_tensor: bool, levels: int) -> np.ndarray:
    """The converters' symmetric int8 weight step: max|w| / levels (127; 64 for onnxruntime's
    reduce_range), per output channel (last axis) or one per tensor."""
    flat = kernel.reshape(-1, kernel.shape[-1])
    peak = np.max(np.abs(flat)) if per_tensor else np.max(np.abs(flat), axis=0)
    return np.where(peak > 0, peak / levels, 1.0).astype(np.float32)


def fake_quantize(kernel: np.ndarray, per_tensor: bool, levels: int) -> np.ndarray:
    """Symmetric int8 weight rounding to nearest on the `weight_scale` grid."""
    flat = kernel.reshape(-1, kernel.shape[-1])
    scale = weight_scale(kernel, per_tensor, levels)
    return (np.clip(np.round(flat / scale), -levels, levels) * scale).reshape(kernel.shape)


def _quantized_kernel(site: _Site, per_tensor: bool, levels: int) -> np.ndarray:
    kernel = np.asarray(site.layer.get_weights()[0], np.float32)
    view = _out_view(site.layer, kernel)
    fold = np.where(site.fold == 0, 1.0, site.fold)
    q = fake_quantize(view * fold, per_tensor, levels) / fold  # rounded as folded, then unfolded
    return q.reshape(kernel.shape)


def fake_quantize_activation(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Asymmetric 8-bit rounding of an activation tensor over its calibrated [lo, hi] range
    (widened to hold 0), as the converters quantize every activation tensor."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


@dataclass
class _Stats:
    sums: dict[int, np.ndarray] = field(default_factory=dict)
    lo: dict[int, float] = field(default_factory=dict)
    hi: dict[int, float] = field(default_factory=dict)


@contextmanager
def _recording(layers: list[Any], stats: _Stats,
               ranges: dict[int, tuple[float, float]] | None = None,
               keep: tuple[int, list[np.ndarray]] | None = None) -> Iterator[None]:  # fmt: skip
    """Record each layer's input (summed over the batch, and its range) while the model runs
    eagerly; with `ranges` (key: the float model's layer), round the input to 8 bits first,
    as the int8 file does, so the quantized copy sees activation rounding too. `keep=(i,
    batches)` also appends layer i's whole input batches (adaround learns from them)."""
    import keras

    def wrap(layer: Any, call: Any, key: int) -> Any:
        def recorded(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            batch = keras.ops.convert_to_numpy(inputs).astype(np.float32)
            if ranges is not None and key in ranges:
                batch = fake_quantize_activation(batch, *ranges[key])
                inputs = keras.ops.convert_to_tensor(batch)
            if keep is not None and keep[0] == key:
                keep[1].append(batch)
            stats.sums[key] = stats.sums.get(key, 0.0) + batch.astype(np.float64).sum(axis=0)
            stats.lo[key] = min(stats.lo.get(key, np.inf), float(batch.min()))
            stats.hi[key] = max(stats.hi.get(key, -np.inf), float(batch.max()))
            return call(inputs, *args, **kwargs)

        return recorded

    for i, layer in enumerate(layers):
        layer.call = wrap(layer, layer.call, i)
    try:
        yield
    finally:
        for layer in layers:
            del layer.call  # back to the class's method


def _run(model: Any, layers: list[Any], x: np.ndarray,
         ranges: dict[int, tuple[float, float]] | None = None) -> _Stats:  # fmt: skip
    """Per layer (by position in `layers`): mean input over `x`, and the input's range."""
    stats = _Stats()
    with _recording(layers, stats, ranges):
        for i in range(0, len(x), _BATCH):
            model(x[i : i + _BATCH], training=False)
    stats.sums = {k: (v / len(x)).astype(np.float32) for k, v in stats.sums.items()}
    return stats


def _mean_output(layer: Any, mean_input: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per output channel mean of the layer's kernel op (no bias, no activation) applied to
    its mean input: exact for the mean over samples, then averaged over positions."""
    import keras

    weights = layer.get_weights()
    saved_activation = getattr(layer, "activation", None)
    weights[0] = kernel
    if len(weights) > 1:
        weights[1] = np.zeros_like(weights[1])
    layer.set_weights(weights)
    layer.activation = keras.activations.linear
    try:
        out = keras.ops.convert_to_numpy(layer(mean_input[None], training=False))
    finally:
        layer.activation = saved_activation
    out = out.reshape(-1, out.shape[-1])
    return out.mean(axis=0)


def bias_correct(model: Any, calibration: np.ndarray, *, per_tensor: bool = False,
                 levels: int = 127) -> Corrected:  # fmt: skip
    """A copy of `model` whose biases absorb the mean output shift that int8 rounding (of
    the weights and of each weighted layer's input) causes."""
    import keras

    from toolkit.core.model_copy import clone_with_weights, copy_weights

    try:
        clone = clone_with_weights(model)
        quant = keras.models.clone_model(model)
    except Exception as exc:  # a subclassed model without a config
        return Corrected(model, skipped=f"the model cannot be cloned ({type(exc).__name__})")
    sites, q_sites = _sites(clone), _sites(quant)
    if not sites or len(sites) != len(q_sites):
        return Corrected(model, skipped="no conv/depthwise/dense layer with a bias or BatchNorm")
    x = np.asarray(calibration, np.float32)[:MAX_SAMPLES]
    copy_weights(clone, quant)
    originals = [np.asarray(s.layer.get_weights()[0]) for s in sites]
    qkernels = [_quantized_kernel(s, per_tensor, levels) for s in sites]
    floats = _run(clone, [s.layer for s in sites], x)
    ranges = {i: (floats.lo[i], floats.hi[i]) for i in floats.sums}
    for q_site, kernel in zip(q_sites, qkernels, strict=True):
        w = q_site.layer.get_weights()
        w[0] = kernel
        q_site.layer.set_weights(w)
    shift_total = [np.zeros_like(s.fold) for s in sites]
    for i, q_site in enumerate(q_sites):  # in model order: each sees upstream corrections
        if i not in floats.sums:
            continue  # a layer the calibration never reached (an unused branch)
        quants = _run(quant, [s.layer for s in q_sites], x, ranges)
        saved = q_site.layer.get_weights()
        want = _mean_output(q_site.layer, floats.sums[i], originals[i])
        got = _mean_output(q_site.layer, quants.sums[i], qkernels[i])
        q_site.layer.set_weights(saved)
        shift_total[i] = (got - want).astype(np.float32)  # got/want leave the bias out
        _move(q_site, shift_total[i])
    result = Corrected(clone)
    for site, delta in zip(sites, shift_total, strict=True):
        if not np.any(delta):
            continue
        _move(site, delta)
        result.layers.append(site.layer.name)
        result.max_shift = max(result.max_shift, float(np.max(np.abs(delta * site.fold))))
    if not result.layers:
        return Corrected(model, skipped="no layer's output mean moved")
    return result


def _move(site: _Site, delta: np.ndarray) -> None:
    """Subtract `delta` (pre-BatchNorm units) from the layer's output: its bias, or the
    BatchNorm's moving mean when the layer has no bias (BN(y - d) = BN with mean + d)."""
    if getattr(site.layer, "use_bias", False):
        weights = site.layer.get_weights()
        weights[1] = weights[1] - delta
        site.layer.set_weights(weights)
        return
    bn = site.bn
    names = [w.path.split("/")[-1] for w in bn.weights]
    weights = bn.get_weights()
    weights[names.index("moving_mean")] = weights[names.index("moving_mean")] + delta
    bn.set_weights(weights)


_LAST: list[tuple[tuple[Any, ...], Corrected]] = []
SUMMARY: dict[str, str] = {}  # format -> what the last correction for it did (report.json)


def once(memo: list[tuple[tuple[Any, ...], Any]], method: Any, model: Any,
         calibration: np.ndarray, per_tensor: bool, levels: int) -> Any:  # fmt: skip
    """`method(model, calibration, per_tensor=, levels=)`, once per model state, calibration
    set and weight grid, remembered in `memo` (every int8 precision of an export converts the
    same copy; the last four: TFLite and ONNX, 7-bit or 8-bit)."""
    from toolkit.core.model_stats import weights_digest

    data = hashlib.sha256(np.ascontiguousarray(calibration, np.float32).tobytes()).hexdigest()
    key = (id(model), weights_digest(model), data, per_tensor, levels)
    for known, result in memo:
        if known == key:
            return result
    result = method(model, calibration, per_tensor=per_tensor, levels=levels)
    memo[:] = [*memo[-3:], (key, result)]
    return result


def cached(model: Any, calibration: np.ndarray, per_tensor: bool, levels: int) -> Corrected:
    """`bias_correct`, once per model state, calibration set and weight quantization."""
    return once(_LAST, bias_correct, model, calibration, per_tensor, levels)


def corrected(model: Any, calibration: np.ndarray, fmt: str, per_tensor: bool,
              levels: int) -> Any:  # fmt: skip
    """The model an exporter converts with `bias_correction=True`: corrected, or the original
    when the method cannot apply (`SUMMARY[fmt]` says which)."""
    result = cached(model, calibration, per_tensor, levels)
    SUMMARY[fmt] = result.summary
    return result.model
