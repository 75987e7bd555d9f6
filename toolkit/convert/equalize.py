"""Cross-layer equalization (Nagel et al., 2019) on the Keras weights, before conversion.

Depthwise-separable nets quantize badly per tensor: one output channel of a depthwise conv
with a 100x wider weight range than its neighbours sets the tensor's single scale, and the
narrow channels round to a few levels. For two layers in a row, A (conv / depthwise / dense)
-> [BatchNorm] -> [ReLU] -> [ZeroPadding] -> B, scaling A's output channel i by 1/s_i and B's
input channel i by s_i computes the same function (ReLU is positively homogeneous, zero
padding too), and s_i = sqrt(r1_i / r2_i) gives both the same range sqrt(r1_i r2_i).

ReLU6 is not homogeneous (the clip at 6 moves). AIMET replaces every ReLU6 between a pair by
ReLU; on a trained MobileNetV2-0.35 that alone took the float model to 20.6 dB SQNR of its
own outputs (values above 6 are rare, under 0.5 % per layer, but they pass on), below its
int8 noise. So a ReLU6 between a pair becomes ReLU only where it never reaches its clip on
the calibration samples (there both compute the same); the others, and every ReLU6 when no
samples are given, keep their clip and their pairs are left alone. Any other ReLU6 (inside a
hard-swish) is never touched. `equalize` returns the new model and what it did; the
converter then reproduces the equalized weights exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")
# Layers with f(s x) = s f(x) channel by channel for s > 0 (ReLU and Activation are checked
# for their settings): equalization may look through them.
HOMOGENEOUS = ("ZeroPadding2D", "GlobalAveragePooling2D", "AveragePooling2D", "MaxPooling2D",
               "Dropout")  # fmt: skip
ITERATIONS = 8  # the paper iterates until ranges settle (why 8: docs/export.md, --equalize)
DEAD = 1e-6  # a channel range below this fraction of its tensor's widest is left alone
MAX_SCALE = 1e3


@dataclass
class Equalized:
    model: Any
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (A, B) layer names
    relu6_replaced: int = 0
    relu6_kept: int = 0  # ReLU6 between a pair that clips (or was not checked): pair skipped
    skipped: str | None = None  # why nothing was equalized; the original model is kept

    @property
    def summary(self) -> str:
        """What report.json's `ptq.equalize` says."""
        if self.skipped:
            return f"skipped: {self.skipped}"
        relu6 = f", {self.relu6_replaced} ReLU6 -> ReLU" if self.relu6_replaced else ""
        if self.relu6_kept:
            relu6 += f", {self.relu6_kept} ReLU6 kept (they reach their clip: pairs skipped)"
        return f"cross-layer: {len(self.pairs)} layer pairs{relu6}"


def _class(layer_cfg: dict[str, Any]) -> str:
    return str(layer_cfg.get("class_name", ""))


def _inbound(layer_cfg: dict[str, Any]) -> list[str]:
    """Names of the layers feeding a layer in a Functional config (Keras 3 format)."""
    names: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            history = obj.get("config", {}).get("keras_history") if "config" in obj else None
            if obj.get("class_name") == "__keras_tensor__" and history:
                names.append(str(history[0]))
                return
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(layer_cfg.get("inbound_nodes", []))
    return names


def _is_relu6(cfg: dict[str, Any]) -> bool:
    c = cfg.get("config", {})
    if _class(cfg) == "ReLU":
        return c.get("max_value") is not None
    return _class(cfg) == "Activation" and c.get("activation") == "relu6"


def _homogeneous(cfg: dict[str, Any], relu6: bool = False) -> bool:
    """A pass-through layer with f(s x) = s f(x) for s > 0; `relu6`: ReLU6 counts too (it
    becomes ReLU when it lies between a pair)."""
    c = cfg.get("config", {})
    if relu6 and _is_relu6(cfg):
        return True
    if _class(cfg) == "ReLU":  # a clip (max_value) is not scale-invariant
        return not c.get("negative_slope") and not c.get("threshold") and not _is_relu6(cfg)
    if _class(cfg) == "Activation":
        return c.get("activation") in ("relu", "linear")
    return _class(cfg) in HOMOGENEOUS


def _chains(
    config: dict[str, Any], relu6: bool = False
) -> list[tuple[str, str | None, str, list[str]]]:
    """(A, its BatchNorm or None, B, the layers between them) for every equalizable pair;
    `relu6`: the pairs ReLU6 -> ReLU would make (see `_relu6_to_relu`)."""
    layers = {cfg["name"]: cfg for cfg in config["layers"]}
    if not any(cfg.get("inbound_nodes") for cfg in config["layers"]):  # Sequential: in order
        order = [cfg["name"] for cfg in config["layers"]]
        inbound = {n: [order[i - 1]] if i else [] for i, n in enumerate(order)}
    else:
        inbound = {name: _inbound(cfg) for name, cfg in layers.items()}
    consumers: dict[str, list[str]] = {name: [] for name in layers}
    for name in layers:
        for src in inbound[name]:
            consumers.setdefault(src, []).append(name)
    outputs = {str(o[0]) for o in _flat_outputs(config.get("output_layers", []))}
    if not outputs and config["layers"]:
        outputs = {config["layers"][-1]["name"]}
    chains = []
    for b_name, b_cfg in layers.items():
        if _class(b_cfg) not in WEIGHTED:
            continue
        node, bn, walked = inbound[b_name], None, []
        while len(node) == 1 and _homogeneous(layers[node[0]], relu6):
            walked.append(node[0])
            node = inbound[node[0]] if len(consumers[node[0]]) == 1 else []
        if len(node) == 1 and _class(layers[node[0]]) == "BatchNormalization":
            bn_cfg = layers[node[0]]["config"]
            if not (bn_cfg.get("scale", True) and bn_cfg.get("center", True)):
                continue  # without gamma and beta the BN output cannot be rescaled
            bn = node[0]
            node = inbound[bn] if len(consumers[bn]) == 1 else []
        if len(node) != 1 or _class(layers[node[0]]) not in WEIGHTED:
            continue
        a_name = node[0]
        if len(consumers[a_name]) != 1 or a_name in outputs or (bn and bn in outputs):
            continue
        fused = layers[a_name]["config"].get("activation", "linear")
        if bn is None and fused not in ("linear", "relu", None, *(("relu6",) if relu6 else ())):
            continue  # A itself is scaled: its own activation must be homogeneous too
        chains.append((a_name, bn, b_name, walked))
    return chains


def _bn_after(config: dict[str, Any]) -> dict[str, str]:
    """Weighted layer -> the BatchNorm that alone consumes it (the converter folds it in)."""
    layers = config["layers"]
    if not any(cfg.get("inbound_nodes") for cfg in layers):  # Sequential: in order
        return {a["name"]: b["name"] for a, b in itertools.pairwise(layers)
                if _class(a) in WEIGHTED and _class(b) == "BatchNormalization"}  # fmt: skip
    fed: dict[str, list[str]] = {}
    for cfg in layers:
        for src in _inbound(cfg):
            fed.setdefault(src, []).append(cfg["name"])
    kinds = {cfg["name"]: _class(cfg) for cfg in layers}
    return {name: users[0] for name, users in fed.items()
            if kinds.get(name) in WEIGHTED and len(users) == 1
            and kinds.get(users[0]) == "BatchNormalization"}  # fmt: skip


def _flat_outputs(spec: Any) -> list[Any]:
    if isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], str):
        return [spec]
    out: list[Any] = []
    for item in spec if isinstance(spec, (list, tuple)) else []:
        out += _flat_outputs(item)
    return out


def _out_axis_ranges(layer: Any) -> np.ndarray:
    """Per output channel max |w| of A (kernel's last axis; depthwise: its channel axis)."""
    kernel = np.asarray(layer.get_weights()[0])
    if type(layer).__name__ == "DepthwiseConv2D":
        kernel = kernel.reshape(*kernel.shape[:2], -1)  # (h, w, channels * multiplier)
    return np.max(np.abs(kernel.reshape(-1, kernel.shape[-1])), axis=0)


def _bn_factor(bn: Any) -> np.ndarray:
    """gamma / sqrt(var + eps): what folding a BatchNorm multiplies its layer's outputs by."""
    return np.abs(bn.gamma.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)


def _in_axis_ranges(layer: Any, bn: Any = None) -> np.ndarray:
    """Per input channel max |w| of B, of its kernel as the converter quantizes it: folded
    with B's own BatchNorm `bn` (its factors scale B's output channels by up to orders of
    magnitude in a trained MobileNet, so the unfolded kernel's ranges are not the ones the
    single per-tensor scale sees)."""
    kernel = np.abs(np.asarray(layer.get_weights()[0]))
    if type(layer).__name__ == "DepthwiseConv2D":
        if bn is not None and kernel.shape[-1] == 1:
            kernel = kernel * _bn_factor(bn).reshape(1, 1, -1, 1)
        return np.max(kernel, axis=(0, 1, 3))
    if bn is not None:
        kernel = kernel * _bn_factor(bn)
    return np.max(np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1), axis=1)


def _scales(r1: np.ndarray, r2: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Scales for the channels in `ok` that minimize R1 * R2, the product of the two tensors'
    widest channel ranges (Nagel et al.'s objective), when the other channels keep theirs.
    Without fixed channels this is the paper's sqrt(r1 / r2). With them, a fixed channel
    may hold one tensor's range up (a trained MobileNet's B fed by 224 dead channels of 256
    has its widest kernel channels there), and the live channels are then raised to that
    range instead of being squeezed below it (which cost 13 dB of output SQNR at one
    depthwise layer of vww_transfer per tensor)."""
    live = np.sqrt(np.max(r1[ok] * r2[ok]))  # both ranges at the product's floor
    fixed1 = float(np.max(r1[~ok], initial=0.0))
    fixed2 = float(np.max(r2[~ok], initial=0.0))
    big1, big2 = max(live, fixed1), max(live, fixed2)
    if big2 > live:  # B's range is held up: A's can fall below the balanced point
        big1 = max(live * live / big2, fixed1)
    elif big1 > live:
        big2 = max(live * live / big1, fixed2)
    return np.sqrt((r1[ok] / big1) * (big2 / r2[ok]))


def _scale_pair(a: Any, bn: Any, b: Any, b_bn: Any = None) -> bool:
    """Equalize one pair in place (ranges of the BN-folded kernels, `bn` after A, `b_bn`
    after B); False when its shapes do not line up (e.g. a depthwise multiplier > 1 or a
    Dense fed by a flattened conv)."""
    r1 = _out_axis_ranges(a)
    if bn is not None:
        r1 = r1 * _bn_factor(bn)
    r2 = _in_axis_ranges(b, b_bn)
    if r1.shape != r2.shape or (type(b).__name__ == "DepthwiseConv2D"
                                and b.get_weights()[0].shape[-1] != 1):  # fmt: skip
        return False
    # A dead channel (range ~1e-30 next to ~1: pretrained MobileNets have them) would get a
    # scale of 1e11 and wreck the tensor's quantization: such channels, below DEAD of their
    # tensor's widest, stay as they are, and no scale leaves [1/MAX_SCALE, MAX_SCALE].
    ok = (r1 > DEAD * r1.max()) & (r2 > DEAD * r2.max())
    s = np.ones_like(r1)
    s[ok] = np.clip(_scales(r1, r2, ok), 1.0 / MAX_SCALE, MAX_SCALE)
    if bn is not None:  # BN output channel i scaled by 1/s_i: gamma and beta both
        weights = bn.get_weights()
        names = [w.path.split("/")[-1] for w in bn.weights]
        for i, n in enumerate(names):
            if n in ("gamma", "beta"):
                weights[i] = weights[i] / s
        bn.set_weights(weights)
    else:
        weights = a.get_weights()
        kernel = weights[0]
        if type(a).__name__ == "DepthwiseConv2D":
            weights[0] = kernel / s.reshape(kernel.shape[-2], kernel.shape[-1])
        else:
            weights[0] = kernel / s
        if len(weights) > 1:
            weights[1] = weights[1] / s
        a.set_weights(weights)
    weights = b.get_weights()
    kernel = weights[0]
    if type(b).__name__ == "DepthwiseConv2D":
        weights[0] = kernel * s.reshape(1, 1, -1, 1)
    else:
        shape = [1] * kernel.ndim
        shape[-2] = -1
        weights[0] = kernel * s.reshape(shape)
    b.set_weights(weights)
    return True


def _relu6_to_relu(config: dict[str, Any], clipping: set[str] | None) -> tuple[int, int]:
    """Replace ReLU6 by ReLU in a model config where it lies between an equalizable pair
    (fused into A, or between A and B), nested models included, unless it is in `clipping`
    (None: all are); (replaced, kept). Any other ReLU6 keeps its clip: inside MobileNetV3's
    hard-sigmoid, relu6(x + 3) / 6, it is the function (replacing it there took a trained
    MobileNetV3-Small from 43.7 % to chance)."""
    chains = _chains(config, relu6=True)
    on_pairs = {a for a, bn, _, _ in chains if bn is None} | {w for c in chains for w in c[3]}
    replaced = kept = 0
    for cfg in config.get("layers", []):
        inner, name = cfg.get("config", {}), cfg.get("name")
        if "layers" in inner:  # a nested Functional / Sequential (a transfer backbone)
            sub = None if clipping is None else {
                n.split("/", 1)[1] for n in clipping if n.startswith(f"{name}/")}  # fmt: skip
            done = _relu6_to_relu(inner, sub)
            replaced, kept = replaced + done[0], kept + done[1]
        elif name not in on_pairs:
            continue
        elif clipping is None or name in clipping:
            kept += _is_relu6(cfg) or inner.get("activation") == "relu6"
        elif _class(cfg) in WEIGHTED and inner.get("activation") == "relu6":
            inner["activation"] = "relu"
            replaced += 1
        elif _is_relu6(cfg):
            if _class(cfg) == "ReLU":
                inner["max_value"] = None
            else:
                inner["activation"] = "relu"
            replaced += 1
    return replaced, kept


def _equalize_in(model: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Equalize every pair of `model` in place, then of each nested model in it (pairs across
    a nested model's boundary are left alone)."""
    pairs: list[tuple[str, str]] = []
    config = model.get_config()
    chains, after = _chains(config), _bn_after(config)
    for _ in range(ITERATIONS):
        for a, bn, b, _ in chains:
            layer_bn = model.get_layer(bn) if bn else None
            b_bn = model.get_layer(after[b]) if b in after else None
            done = _scale_pair(model.get_layer(a), layer_bn, model.get_layer(b), b_bn)
            if done and (prefix + a, prefix + b) not in pairs:
                pairs.append((prefix + a, prefix + b))
    for layer in model.layers:
        if getattr(layer, "layers", None) and hasattr(layer, "get_config"):
            try:
                pairs += _equalize_in(layer, f"{prefix}{layer.name}/")
            except (KeyError, TypeError, ValueError):
                continue  # a nested model without a usable config: left as it is
    return pairs


def equalize(model: Any, calibration: np.ndarray | None = None) -> Equalized:
    """A copy of `model` with every equalizable pair equalized; a ReLU6 between a pair
    becomes ReLU first where it never reaches its clip on `calibration` (None: none does)."""
    try:
        config = model.get_config()
    except Exception:  # a subclassed model without a config
        config = {}
    if "layers" not in config:
        return Equalized(model, skipped="not a Functional or Sequential model")
    clipping = None
    if calibration is not None:
        from toolkit.convert.equalize_clip import clipping as probe_clips

        clipping = probe_clips(model, np.asarray(calibration, dtype=np.float32))
    replaced, kept = _relu6_to_relu(config, clipping)
    from toolkit.core.model_copy import copy_weights

    clone = copy_weights(model, model.__class__.from_config(config))
    result = Equalized(clone, _equalize_in(clone), relu6_replaced=replaced, relu6_kept=kept)
    if not result.pairs:  # nothing to equalize: keep the original (and its ReLU6)
        why = "no conv/depthwise/dense pairs to equalize"
        if kept:
            how = "they reach their clip" if calibration is not None else "no samples to check"
            why += f" ({kept} ReLU6 between pairs kept: {how})"
        return Equalized(model, relu6_kept=kept, skipped=why)
    return result


_LAST: list[tuple[tuple[Any, ...], str | None, Equalized]] = []


def cached(model: Any, calibration: np.ndarray | None = None) -> Equalized:
    """`equalize(model, calibration)`, computed once per model state and calibration set
    (every precision of an export converts the same equalized copy, so the calibration
    caches see one model); without `calibration`, the last one computed for this model."""
    import hashlib

    from toolkit.core.model_stats import weights_digest

    key = (id(model), str(model.name), weights_digest(model))
    calib = None
    if calibration is not None:
        calib = hashlib.sha1(np.ascontiguousarray(calibration, np.float32).tobytes()).hexdigest()
    if not (_LAST and _LAST[0][0] == key and calib in (None, _LAST[0][1])):
        _LAST[:] = [(key, calib, equalize(model, calibration))]
    return _LAST[0][2]


def equalized(model: Any, calibration: np.ndarray | None = None) -> Any:
    """The model to convert with `equalize=True`: equalized, or the original when the
    method cannot apply (then `cached(model).skipped` says why)."""
    return cached(model, calibration).model
