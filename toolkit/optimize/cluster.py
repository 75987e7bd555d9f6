"""Weight clustering (weight sharing) of a tf_keras model with tfmot.

Clustered kernels hold at most N distinct values, which compress well (gzip) and map to
palette formats. Only kernel layers are wrapped; the rest is reused untouched.
"""

from __future__ import annotations

from typing import Any

from toolkit.core.errors import UserError
from toolkit.core.optimize_config import ClusterConfig
from toolkit.optimize.prune import check_skips

CLUSTERABLE = {"Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D"}
INIT = {
    "kmeans_plus_plus": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density": "DENSITY_BASED",
    "random": "RANDOM",
}


def apply(model: Any, config: ClusterConfig, *, preserve_sparsity: bool = False) -> Any:
    """The model with clustering wrappers; `preserve_sparsity` keeps earlier pruning's zeros."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    check_skips(model, config.skip_layers, "cluster")
    clustering = tfmot.clustering.keras
    init = getattr(clustering.CentroidInitialization, INIT[config.init])
    chosen = {
        layer.name
        for layer in model.layers
        if type(layer).__name__ in CLUSTERABLE and layer.name not in config.skip_layers
        and layer.weights and _kernel_size(layer) > config.clusters
    }  # fmt: skip
    if not chosen:
        raise UserError(
            f"cluster: no Conv/Dense layer has more than {config.clusters} weights to cluster"
        )
    kwargs: dict[str, Any] = {"number_of_clusters": config.clusters,
                              "cluster_centroids_init": init}  # fmt: skip
    if preserve_sparsity:
        kwargs["preserve_sparsity"] = True

    def wrap(layer: Any) -> Any:
        if layer.name in chosen:
            return clustering.cluster_weights(layer, **kwargs)
        return layer

    return tf_keras.models.clone_model(model, clone_function=wrap)


def _kernel_size(layer: Any) -> int:
    for attr in ("kernel", "depthwise_kernel"):
        if getattr(layer, attr, None) is not None:
            return int(getattr(layer, attr).shape.num_elements())
    return 0


def strip(model: Any) -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot.clustering.keras.strip_clustering(model)
