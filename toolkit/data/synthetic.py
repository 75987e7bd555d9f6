"""Deterministic synthetic data for the zoo's tasks: keyword-like MFCC frames, sensor anomalies.

Generated from `dataset.seed` in milliseconds, so tests and recipes run offline and the same
everywhere. They are stand-ins with the right shapes and difficulty knobs, not real speech or
machines: real data goes through `npz:PATH`.
"""

from __future__ import annotations

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import DataSpec
from toolkit.data.registry import DatasetEntry, register_dataset
from toolkit.data.splits import Source

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "_silence_", "_unknown_")
FRAMES, COEFFS = 32, 10
SENSOR_STEPS, SENSOR_CHANNELS = 32, 3
ANOMALY_KINDS = ("spike", "drift", "frequency", "flatline")


def keyword_features(n: int, seed: int = 0, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """(n, FRAMES, COEFFS) MFCC-like frames and keyword indices.

    Each keyword is a sequence of 3-4 "phoneme" prototype vectors; a sample stretches it in
    time (speed 0.7-1.3), shifts its onset, scales its loudness (coefficient 0) and adds
    noise. `_silence_` is noise only; `_unknown_` strings random phonemes together.
    """
    rng = np.random.default_rng(seed)
    phonemes = np.random.default_rng(1234).normal(0, 1.5, size=(12, COEFFS))
    words = np.random.default_rng(4321).integers(0, 12, size=(len(KEYWORDS), 4))
    x = np.zeros((n, FRAMES, COEFFS), np.float32)
    y = np.arange(n) % len(KEYWORDS)
    rng.shuffle(y)
    for i, label in enumerate(y):
        frames = rng.normal(0, noise, size=(FRAMES, COEFFS))
        frames[:, 0] -= 3.0  # quiet background energy
        if KEYWORDS[label] != "_silence_":
            sounds = rng.integers(0, 12, 4) if KEYWORDS[label] == "_unknown_" else words[label]
            length = int(np.clip(rng.uniform(0.7, 1.3) * 20, 8, FRAMES - 2))
            start = int(rng.integers(0, FRAMES - length + 1))
            pos = np.linspace(0, len(sounds) - 1e-6, length).astype(int)
            frames[start : start + length] += phonemes[sounds[pos]]
            frames[start : start + length, 0] += 3.0 * rng.uniform(0.6, 1.4)
        x[i] = frames
    return x, y.astype(np.int64)


def sensor_windows(
    n: int, seed: int = 0, anomaly_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(n, SENSOR_STEPS, SENSOR_CHANNELS) vibration windows and labels (1 = anomalous).

    Normal: three phase-locked sinusoids (one machine, three axes) with random frequency in a
    narrow band and noise. Anomalies (subtle on purpose): a spike, a slow drift, a frequency
    20-25 % off the band, or one axis fading to 40 %.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(SENSOR_STEPS)[:, None]
    labels = (rng.uniform(size=n) < anomaly_fraction).astype(np.int64)
    x = np.zeros((n, SENSOR_STEPS, SENSOR_CHANNELS), np.float32)
    for i in range(n):
        freq = rng.uniform(0.09, 0.11)
        phase = rng.uniform(0, 2 * np.pi)
        amp = np.array([1.0, 0.6, 0.3]) * rng.uniform(0.9, 1.1)
        if labels[i]:
            kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
            if kind == "frequency":
                freq *= rng.choice([0.8, 1.25])
        shifts = np.array([0.0, np.pi / 3, np.pi / 2])
        window = amp * np.sin(2 * np.pi * freq * t + phase + shifts)
        window += rng.normal(0, 0.15, size=window.shape)
        if labels[i] and kind == "spike":
            window[int(rng.integers(SENSOR_STEPS)), int(rng.integers(3))] += rng.choice([-1.2, 1.2])
        elif labels[i] and kind == "drift":
            window[:, int(rng.integers(3))] += np.linspace(0, rng.uniform(0.3, 0.8), SENSOR_STEPS)
        elif labels[i] and kind == "flatline":  # a failing sensor: one axis fades
            window[:, int(rng.integers(3))] *= 0.4
        x[i] = window
    return x, labels


def _size(spec: DataSpec, default: int) -> int:
    return int(spec.max_samples) if spec.max_samples else default


def load_keywords(spec: DataSpec, arg: str | None = None) -> Source:
    if spec.task == "regression":
        raise UserError("dataset 'keywords-synth' is a classification dataset; drop task")
    x, y = keyword_features(max(_size(spec, 2000), 3 * len(KEYWORDS)), seed=spec.seed)
    return Source(
        what="keywords-synth", y=y, task="classification", labels=list(KEYWORDS),
        kind="sequence", input_shape=x.shape[1:], x=x,
    )  # fmt: skip


def load_sensor_anomaly(spec: DataSpec, arg: str | None = None) -> Source:
    if spec.task is not None:
        raise UserError("dataset 'sensor-anomaly' has task anomaly (labels 0/1); drop task")
    x, y = sensor_windows(max(_size(spec, 2000), 40), seed=spec.seed)
    return Source(
        what="sensor-anomaly", y=y, task="anomaly", labels=["normal", "anomaly"],  # type: ignore[arg-type]
        kind="sequence", input_shape=x.shape[1:], x=x,
        feature_names=["axis_x", "axis_y", "axis_z"],
    )  # fmt: skip


register_dataset(
    "keywords-synth",
    DatasetEntry(
        load_keywords,
        "sequence",
        "classification",
        "synthetic keyword-like MFCC frames, 32 frames x 10 coefficients, 6 words + silence + "
        "unknown; deterministic by seed (max_samples sets the count, default 2,000)",
    ),
)
register_dataset(
    "sensor-anomaly",
    DatasetEntry(
        load_sensor_anomaly,
        "sequence",
        "anomaly",
        "synthetic 3-axis vibration windows (32 steps), ~10 % anomalous (spike, drift, "
        "frequency, dead axis), labels 0/1; for autoencoders; deterministic by seed",
    ),
)
