"""How many samples go through a model at once: bounded by memory, not by a fixed count.

A MobileNet's activations are ~100x its input, so 256 images at 224x224x3 (154 MB of input)
need several GB in flight; 256 digits need nothing. Every batched pass (the Keras reference,
parity labelling, the runtimes' accuracy passes) sizes its batches with this one rule.
"""

from __future__ import annotations

import numpy as np

MAX_BATCH = 256
BATCH_BYTES = 8 * 2**20  # float32 input bytes per batch: 13 images at 224x224x3


def batch_size_for(sample_shape: tuple[int, ...]) -> int:
    """Samples per inference batch: MAX_BATCH, or fewer for big inputs, so a batch of
    224x224 images (and its activations, ~100x the input on a MobileNet) stays far from the
    memory budget."""
    sample_bytes = 4 * max(1, int(np.prod([d for d in sample_shape if d and d > 0])))
    return int(max(1, min(MAX_BATCH, BATCH_BYTES // sample_bytes)))
