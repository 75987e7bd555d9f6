"""AdaRound (Nagel et al., 2020) on the Keras weights, before conversion.

Rounding each int8 weight to its nearest level is not what keeps a layer's output closest:
errors of neighbouring weights add up on the same output. AdaRound learns, per weight, whether
to round down or up, minimising the layer's output error on calibration inputs (a soft
rectified-sigmoid relaxation annealed to hard 0/1 decisions). The chosen levels are written back
as float weights that sit exactly on the converter's grid (symmetric int8, per channel or per
tensor, of the BatchNorm-folded kernel, with the peak weight -- and so the scale -- unchanged),
so TFLiteConverter and onnxruntime round them to exactly the learned integers.

Layers are rounded in model order; each sees the inputs of the copy whose upstream layers are
already rounded and whose activations are 8-bit (as `bias_correct` simulates them), and its
target is the float model's own output of that layer (the asymmetric reconstruction of Nagel et
al. and AdaQuant), so later layers compensate for the error upstream instead of copying it.
(bench/ptq.py, vww_transfer_full per tensor: the quantized-input target kept accuracy at
~80 % top-1 agreement with float in the run before this change; this one 88.8 / 90.7 %,
TFLite / ONNX.) MAX_SAMPLES calibration samples (fewer for a layer with big feature maps: at
most MAX_ELEMENTS input values), ITERATIONS Adam steps a layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.convert.bias_correct import _out_view, _recording, _sites, _Stats, once, weight_scale

MAX_SAMPLES = 128
# Per layer's learning batch: big feature maps take fewer samples. 8M keeps all 128 samples up to
# 62,500 values a sample (a 96-px MobileNet's 48x48x16); the rounding is sensitive to the
# subset (vww_transfer_full per tensor: 108 samples at two layers instead of 128 moved TFLite
# test top-1 by 1.2 pp, 49.40 -> 48.20 %: a one-off run of `adaround` at 8M vs 4M).
MAX_ELEMENTS = 8_000_000
ITERATIONS = 400
_BATCH = 32
_ZETA, _GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)
_REG = 0.01  # weight of the push towards hard 0/1 decisions
_BETA = (20.0, 2.0)  # annealed over the iterations after a 20 % warm-up without it


@dataclass
class Rounded:
    model: Any
    layers: list[str] = field(default_factory=list)  # layers whose rounding changed
    flipped: float = 0.0  # fraction of weights rounded away from nearest
    skipped: str | None = None

    @property
    def summary(self) -> str:
        """What report.json's `ptq.adaround` says."""
        if self.skipped:
            return f"skipped: {self.skipped}"
        share = f"{100 * self.flipped:.1f} %"
        return f"{len(self.layers)} layers, {share} of weights not rounded to nearest"


def _op(layer: Any, x: Any, kernel: Any) -> Any:
    """The layer's linear op (no bias, no activation) with `kernel`, differentiable."""
    import keras

    kind = type(layer).__name__
    if kind == "Dense":
        return keras.ops.matmul(x, kernel)
    if kind == "DepthwiseConv2D":
        return keras.ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                                        data_format=layer.data_format,
                                        dilation_rate=layer.dilation_rate)  # fmt: skip
    return layer.convolution_op(x, kernel)


def _learn(layer: Any, x: np.ndarray, kernel: np.ndarray, fold: np.ndarray, per_tensor: bool,
           levels: int, float_x: np.ndarray | None = None) -> tuple[np.ndarray, int]:  # fmt: skip
    """The layer's kernel with learned rounding (same shape, on the converter's grid), and how
    many weights it rounds away from nearest. The rounded layer on `x` is fitted to the float
    layer on `float_x` (the float model's inputs of this layer; `x` itself when None)."""
    import tensorflow as tf

    view = _out_view(layer, kernel)
    safe = np.where(fold == 0, 1.0, fold).astype(np.float32)
    folded = view * safe
    scale = weight_scale(folded, per_tensor, levels)  # the converter's grid
    floor = np.floor(folded / scale)
    rest = np.clip(folded / scale - floor, 0.0, 1.0)
    # h(v) = clip(sigmoid(v) (zeta - gamma) + gamma, 0, 1) starts at the residual: nearest
    # rounding is where the search begins, not a coin flip.
    init = -np.log((_ZETA - _GAMMA) / (np.clip(rest, 0.01, 0.99) - _GAMMA) - 1)
    v = tf.Variable(init.astype(np.float32))
    const = {k: tf.constant(a.astype(np.float32)) for k, a in
             (("floor", floor), ("scale", scale), ("fold", safe))}  # fmt: skip
    target_kernel = tf.constant(kernel.astype(np.float32))
    xs = tf.constant(x)

    def soft_kernel(hard: bool) -> Any:
        h = tf.clip_by_value(tf.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)
        if hard:
            h = tf.cast(h >= 0.5, tf.float32)
        q = tf.clip_by_value(const["floor"] + h, -levels, levels) * const["scale"]
        return tf.reshape(q / const["fold"], kernel.shape), h

    target = _op(layer, xs if float_x is None else tf.constant(float_x), target_kernel)
    power = tf.reduce_mean(tf.square(target)) + 1e-12
    opt = tf.keras.optimizers.Adam(learning_rate=1e-2)
    warm = int(0.2 * ITERATIONS)
    for step in range(ITERATIONS):
        with tf.GradientTape() as tape:
            k, h = soft_kernel(hard=False)
            loss = tf.reduce_mean(tf.square(_op(layer, xs, k) - target)) / power
            if step >= warm:  # then push every h to 0 or 1, ever harder
                t = (step - warm) / max(ITERATIONS - warm, 1)
                beta = _BETA[1] + 0.5 * (_BETA[0] - _BETA[1]) * (1 + np.cos(np.pi * t))
                loss = loss + _REG * tf.reduce_mean(1 - tf.pow(tf.abs(2 * h - 1), beta))
        opt.apply_gradients([(tape.gradient(loss, v), v)])
    learned, h = soft_kernel(hard=True)
    changed = int(np.sum(h.numpy() != (rest >= 0.5)))
    return learned.numpy(), changed


def _inputs(model: Any, layers: list[Any], index: int, x: np.ndarray,
            ranges: dict[int, tuple[float, float]] | None) -> np.ndarray:  # fmt: skip
    """The full input batch of `layers[index]` over `x` (8-bit rounded where `ranges`)."""
    kept: list[np.ndarray] = []
    stats = _Stats()
    with _recording(layers, stats, ranges, keep=(index, kept)):
        for i in range(0, len(x), _BATCH):
            model(x[i : i + _BATCH], training=False)
    return np.concatenate(kept) if kept else np.zeros((0,), np.float32)


def adaround(model: Any, calibration: np.ndarray, *, per_tensor: bool = False,
             levels: int = 127) -> Rounded:  # fmt: skip
    """A copy of `model` whose conv/depthwise/dense kernels sit on the int8 grid with learned
    rounding."""
    from toolkit.core.model_copy import clone_with_weights

    try:
        clone = clone_with_weights(model)
    except Exception as exc:  # a subclassed model without a config
        return Rounded(model, skipped=f"the model cannot be cloned ({type(exc).__name__})")
    sites = _sites(clone, biased_only=False)
    if not sites:
        return Rounded(model, skipped="no conv/depthwise/dense layer")
    float_layers = [s.layer for s in _sites(model, biased_only=False)]
    if len(float_layers) != len(sites):  # cannot pair the layers: fit on the quantized inputs
        float_layers = []
    x = np.asarray(calibration, np.float32)[:MAX_SAMPLES]
    layers = [s.layer for s in sites]
    floats = _Stats()
    with _recording(layers, floats):
        for i in range(0, len(x), _BATCH):
            clone(x[i : i + _BATCH], training=False)
    ranges = {i: (floats.lo[i], floats.hi[i]) for i in floats.sums}
    result, flipped, total = Rounded(clone), 0, 0
    for i, site in enumerate(sites):  # in model order: each sees upstream rounding
        if i not in ranges:
            continue  # a layer the calibration never reached
        weights = site.layer.get_weights()
        kernel = np.asarray(weights[0], np.float32)
        inputs = _inputs(clone, layers, i, x, ranges)
        per_sample = max(int(np.prod(inputs.shape[1:])), 1)
        n = max(8, MAX_ELEMENTS // per_sample)  # (MobileNetV2-224: 19 at 112x112x32)
        inputs = inputs[:n]
        float_x = _inputs(model, float_layers, i, x[:n], None) if float_layers else None
        learned, changed = _learn(site.layer, inputs, kernel, site.fold, per_tensor, levels,
                                  float_x)  # fmt: skip
        flipped, total = flipped + changed, total + kernel.size
        weights[0] = learned.astype(np.float32)
        site.layer.set_weights(weights)
        if changed:
            result.layers.append(site.layer.name)
    result.flipped = flipped / max(total, 1)
    return result


_LAST: list[tuple[tuple[Any, ...], Rounded]] = []
SUMMARY: dict[str, str] = {}  # format -> what the last rounding for it did (report.json)


def rounded(model: Any, calibration: np.ndarray, fmt: str, per_tensor: bool, levels: int) -> Any:
    """The model an exporter converts with `adaround=True`, once per model state, calibration
    set and weight grid; the original when the method cannot apply (`SUMMARY[fmt]` says)."""
    result = once(_LAST, adaround, model, calibration, per_tensor, levels)
    SUMMARY[fmt] = result.summary
    return result.model
