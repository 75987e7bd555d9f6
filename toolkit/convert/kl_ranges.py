"""KL-divergence (entropy) activation ranges: TensorRT's search, run on onnxruntime's histograms.

Why not ORT's own search: its HistogramCollector slides a symmetric window over a signed
histogram, models 128 levels across both sides and counts the spike of exact ReLU zeros as
data. On a post-ReLU tensor half its bins are empty, the levels it models are 64 on the side
that carries data (the QDQ file gets 256 there), and the zero spike outweighs the tail, so the
KL minimum lands on a tiny window: on vww_transfer_mnist the deep ranges shrank 16x and int8
fell from 95.95 % to 11.35 % (bench/RESULTS.md). Here the histogram is folded to |x|, a
one-sided tensor is searched with the 256 levels it really gets (a signed one with 128 per
side), and the zero bin is discounted as TensorRT's calibrator (and NVIDIA's
pytorch-quantization) do.

That alone still failed there (15.70 %): images with a constant background give every channel
one activation value shared by most pixels, a spike in one bin. KL's model spreads a step's
mass evenly over the step's bins, so a spike only fits where steps are one bin wide, and the
search picked windows just above a spike that clipped up to 76 % of a tensor. A spike is one
value, which int8 rounds to within half a step wherever the range lies, so like the zero bin
it is not evidence: a bin beyond 6 Poisson sigmas of its 9-bin median is set to that median
(`despike`; bench/RESULTS.md, "PTQ: the vww_96 backbone transferred to MNIST")."""

from __future__ import annotations

import numpy as np

LEVELS = 256  # int8: 256 steps over [0, t] for a one-sided tensor, 128 a side for a signed one


def fold(hist: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A histogram over the symmetric [-t, t] (ORT's collector: an even bin count) as counts
    of |x| over [0, t], with its edges."""
    zero = len(hist) // 2
    return hist[zero:] + hist[:zero][::-1], np.abs(edges[zero:])


def despike(counts: np.ndarray, width: int = 9, sigmas: float = 6.0) -> np.ndarray:
    """`counts` with every bin above its `width`-bin running median by more than `sigmas`
    Poisson deviations set to that median: a smooth density's bins never get there, a value
    many samples share (a constant background's activation) does."""
    bins = counts.astype(np.float64)
    if len(bins) < width:
        return bins
    padded = np.pad(bins, width // 2, mode="edge")
    median = np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)
    return np.where(bins > median + sigmas * np.sqrt(median + 1.0), median, bins)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two count vectors, each normalized; inf where q misses mass p has."""
    p, q = p / p.sum(), q / q.sum()
    if np.any((q == 0) & (p > 0)):
        return float("inf")
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def kl_cut(counts: np.ndarray, levels: int) -> int:
    """How many leading bins of the |x| histogram `counts` the range should keep: the window
    whose `levels`-step quantization diverges least (KL) from the clipped distribution."""
    bins = counts.astype(np.float64)
    if len(bins) <= levels or bins.sum() == 0:
        return len(bins)
    bins[0] = bins[1]  # the zero spike is exact in int8 (zero point): not evidence
    bins = despike(bins)  # nor is any other single value many samples share
    tails = np.concatenate([np.cumsum(bins[::-1])[::-1], [0.0]])  # tails[i] = sum(bins[i:])
    best, cut = float("inf"), len(bins)
    for i in range(levels, len(bins) + 1):
        p = bins[:i].copy()
        p[-1] += tails[i]  # what the window clips saturates into its last step
        step = np.minimum((np.arange(i) * levels) // i, levels - 1)
        filled = p > 0
        mass = np.bincount(step, weights=bins[:i], minlength=levels)
        spread = np.bincount(step, weights=filled[:i].astype(np.float64), minlength=levels)
        q = np.where(filled, mass[step] / np.maximum(spread[step], 1), 0.0)
        kl = _kl(p, q) if q.sum() > 0 else float("inf")
        if kl <= best:  # ties: the wider window (less clipping for the same fit)
            best, cut = kl, i
    return cut


def kl_range(hist: np.ndarray, edges: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The (low, high) range KL keeps of a tensor whose signed histogram is `hist` over
    `edges` and whose calibration min/max are `low`/`high`."""
    counts, abs_edges = fold(np.asarray(hist), np.asarray(edges, dtype=np.float64))
    one_sided = low >= 0
    t = float(abs_edges[kl_cut(counts, LEVELS if one_sided else LEVELS // 2)])
    return (low if one_sided else max(low, -t)), min(high, t)
