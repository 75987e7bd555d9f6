"""Is a drop real or noise? A paired bootstrap interval and McNemar's test, per artifact.

Both compare the artifact with the reference *on the same samples*, which is what makes small
differences detectable: only samples where the two disagree carry information. The interval is
over the headline metric's drop (positive = worse); McNemar's exact test (scipy's binomial test
on the discordant pairs) applies where each sample is right or wrong (accuracy-like metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
RECOMPUTED_RESAMPLES = 200  # metrics without a per-sample form (AUC, F1) cost a full recompute
ALPHA = 0.05


@dataclass(frozen=True)
class DropStats:
    ci95: tuple[float, float] | None  # paired-bootstrap 95 % interval of the drop
    mcnemar_p: float | None  # exact McNemar p-value (accuracy-like metrics only)
    discordant: tuple[int, int] | None  # (reference right & artifact wrong, the reverse)

    @property
    def significant(self) -> bool | None:
        """True when the drop is unlikely to be sampling noise at this sample size."""
        if self.mcnemar_p is not None:
            return self.mcnemar_p < ALPHA
        if self.ci95 is not None:
            return not (self.ci95[0] <= 0.0 <= self.ci95[1])
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "drop_ci95": list(self.ci95) if self.ci95 is not None else None,
            "mcnemar_p": self.mcnemar_p,
            "significant": self.significant,
        }


def mcnemar(ref_correct: np.ndarray, art_correct: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Exact two-sided McNemar p-value from per-sample right/wrong of reference and artifact."""
    from scipy.stats import binomtest

    ref_correct, art_correct = np.asarray(ref_correct, bool), np.asarray(art_correct, bool)
    b = int(np.sum(ref_correct & ~art_correct))  # the artifact broke these
    c = int(np.sum(~ref_correct & art_correct))  # the artifact fixed these
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return p, (b, c)


def paired_bootstrap(
    n: int,
    drop_of: Callable[[np.ndarray], float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float] | None:
    """95 % percentile interval of `drop_of(indices)` over resamples of the n samples (the
    same indices for artifact and reference: the pairing)."""
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(resamples):
        value = drop_of(rng.integers(0, n, n))
        if value is not None and np.isfinite(value):
            drops.append(value)
    if len(drops) < resamples // 2:  # e.g. AUC undefined on most resamples: say nothing
        return None
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return float(lo), float(hi)


def drop_stats(
    per_sample: tuple[np.ndarray, np.ndarray] | None,
    recompute: Callable[[np.ndarray, bool], float | None] | None,
    n: int,
    higher_is_better: bool,
    correctness: tuple[np.ndarray, np.ndarray] | None = None,
) -> DropStats:
    """Interval and test for one artifact.

    `per_sample`: (reference, artifact) per-sample values whose mean is the metric (accuracy:
    0/1 correct, MAE: absolute error), bootstrapped fast; otherwise `recompute(idx, artifact?)`
    recomputes the metric on a resample. `correctness`: per-sample right/wrong for McNemar.
    """
    sign = 1.0 if higher_is_better else -1.0
    if per_sample is not None:
        ref, art = (np.asarray(v, dtype=np.float64) for v in per_sample)
        diff = sign * (ref - art)
        ci = paired_bootstrap(n, lambda idx: float(diff[idx].mean()))
    elif recompute is not None:

        def drop_of(idx: np.ndarray) -> float:
            ref_v, art_v = recompute(idx, False), recompute(idx, True)
            return float("nan") if ref_v is None or art_v is None else sign * (ref_v - art_v)

        ci = paired_bootstrap(n, drop_of, resamples=RECOMPUTED_RESAMPLES)
    else:
        ci = None
    p, discordant = mcnemar(*correctness) if correctness is not None else (None, None)
    return DropStats(ci, p, discordant)
