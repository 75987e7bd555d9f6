"""Transfer learning: a pretrained backbone cut at its features, a new head, two phases.

The backbone is any Keras model file `toolkit.core.modelio` loads (Keras 3 `.keras`, Keras 2 `.h5`
such as MLPerf Tiny's vww_96.h5, a SavedModel, a run directory) or a registered builder with
`weights: imagenet|PATH`. The new model takes the *dataset's* raw inputs: resizing to the
backbone's input size and mapping the value range to the backbone's are layers inside it, so
an exported file needs no host-side preprocessing. The backbone is one nested layer named
`backbone`, always called with `training=False`, so BatchNorm stays in inference mode (its
moving statistics came from the big pretraining set; a small target set would ruin them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError, suggest

BACKBONE = "backbone"


def load_backbone(config: Any, ds: Any) -> tuple[Any, tuple[float, float], str]:
    """(full pretrained model, the value range it expects, a description for the record)."""
    from toolkit.builders.registry import BUILDERS, _load_all

    _load_all()
    path = Path(config.backbone).expanduser()
    if config.backbone in BUILDERS and not path.exists():
        return _builder_backbone(config, ds)
    if not path.exists():
        raise UserError(
            f"transfer.backbone {config.backbone!r}: no such file, and not a builder "
            f"(builders: {', '.join(sorted(BUILDERS))})"
        )
    from toolkit.core.modelio import load_model

    loaded = load_model(path)  # missing/corrupt/unsupported files -> one-line UserError
    spec = loaded.input_spec or {}
    if config.input_range is not None:
        value_range = tuple(float(v) for v in config.input_range)
    elif spec.get("value_range"):  # a toolkit model: it takes raw values, normalizes inside
        value_range = tuple(float(v) for v in spec["value_range"])
    else:
        value_range = (0.0, 1.0)
    if config.input_size is not None:
        fixed = tuple(loaded.model.inputs[0].shape[1:3])
        if tuple(config.input_size) != fixed:
            raise UserError(
                f"transfer.input_size {list(config.input_size)} cannot be used: backbone "
                f"{path.name} takes {fixed[0]}x{fixed[1]} inputs (drop input_size: the data "
                "is resized to the backbone's size)"
            )
    return loaded.model, value_range, str(path)


def _builder_backbone(config: Any, ds: Any) -> tuple[Any, tuple[float, float], str]:
    """A registered builder at the backbone input size, with its weights and value range."""
    from toolkit.builders import BuildContext, build_model, get_builder

    info = get_builder(config.backbone)
    if len(ds.input_shape) != 3:
        raise UserError(
            f"transfer.backbone {config.backbone!r} is an image model; the dataset gives "
            f"shape {tuple(ds.input_shape)}"
        )
    size = tuple(config.input_size or ds.input_shape[:2])
    channels = 3 if config.weights not in (None, "none") else int(ds.input_shape[-1])
    ctx = BuildContext(input_shape=(*size, channels), task="classification", num_outputs=2)
    args = {"weights": config.weights} if "weights" in info.params() else {}
    model = build_model(config.backbone, ctx, args)
    value_range = {"symmetric": (-1.0, 1.0), "rescale": (0.0, 1.0)}.get(info.normalize)
    if value_range is None:  # a standardizing builder: unit-ish range is the best guess
        value_range = (-1.0, 1.0)
    return model, value_range, f"builder {config.backbone} (weights: {config.weights or 'none'})"


def feature_layer(model: Any, cut: str) -> Any:
    """The layer whose output becomes the features: named, or the input of the last Dense."""
    from keras import layers

    names = [layer.name for layer in model.layers]
    if cut != "auto":
        if cut not in names:
            raise UserError(f"transfer.cut: backbone has no layer {cut!r}{suggest(cut, names)}")
        return model.get_layer(cut)
    dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, layers.Dense)]
    if not dense:
        return model.layers[-1]  # a headless backbone (include_top=False)
    index = dense[-1] - 1
    while index > 0 and isinstance(model.layers[index], layers.Dropout):
        index -= 1
    if index <= 0:
        raise UserError("transfer.cut auto: the backbone is a single Dense layer; name a cut")
    return model.layers[index]


def cut_backbone(model: Any, cut: str, pretrained: bool) -> Any:
    """A sub-model from the backbone's input to its features (fresh weights if not pretrained)."""
    import keras

    layer = feature_layer(model, cut)
    trunk = keras.Model(model.inputs, layer.output, name=BACKBONE)
    if not pretrained:  # same architecture and size, random init: the from-scratch baseline
        trunk = keras.models.clone_model(trunk)
    return trunk


def build_transfer_model(recipe: Any, ds: Any, loss: str) -> tuple[Any, dict[str, Any]]:
    """The transfer model on this dataset, backbone frozen (phase 1). Returns (model, record)."""
    import keras
    from keras import layers

    from toolkit.builders import BuildContext

    config = recipe.transfer
    if ds.kind != "image" or len(ds.input_shape) != 3:
        raise UserError(f"transfer learning needs image data; {ds.name} gives {ds.kind} data")
    full, value_range, what = load_backbone(config, ds)
    trunk = cut_backbone(full, config.cut, config.pretrained)
    shape = tuple(trunk.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise UserError(f"backbone {what} takes input {shape}; transfer needs HxWx1 or HxWx3")
    height, width, channels = shape
    if height is None or width is None:
        height, width = config.input_size or ds.input_shape[:2]
    data_channels = int(ds.input_shape[-1])
    if data_channels not in (1, channels):
        raise UserError(
            f"backbone {what} takes {channels}-channel images; the data has {data_channels} "
            "channels (set dataset.color_mode)"
        )
    lo, hi = (float(v) for v in ds.value_range)
    span = (hi - lo) or 1.0
    scale = (value_range[1] - value_range[0]) / span
    offset = value_range[0] - lo * scale

    inputs = keras.Input(shape=tuple(ds.input_shape), name="input")
    x = inputs
    if (ds.input_shape[0], ds.input_shape[1]) != (height, width):
        x = layers.Resizing(int(height), int(width), name="resize")(x)
    x = layers.Rescaling(scale, offset=offset, name="backbone_range")(x)
    if data_channels == 1 and channels == 3:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    trunk.trainable = not config.pretrained
    try:  # pretrained: BatchNorm in inference mode in both phases; from scratch: as usual
        features = trunk(x, training=False) if config.pretrained else trunk(x)
    except ValueError as err:
        raise UserError(f"backbone {what} cannot take {height}x{width} inputs: {err}") from None
    if len(features.shape) == 4:
        features = layers.GlobalAveragePooling2D(name="pool")(features)
    elif len(features.shape) != 2:
        features = layers.Flatten(name="flatten_features")(features)
    # Pretrained features on a new domain can be tiny and near-constant (vww_96.h5 on CIFAR-10:
    # mean 0.03, spread 0.01): a BatchNorm scales them so the head learns at a normal LR.
    features = layers.BatchNormalization(name="feature_bn")(features)
    if config.head_dense:
        features = layers.Dense(config.head_dense, activation="relu", name="head_dense")(features)
    ctx = BuildContext(
        input_shape=tuple(ds.input_shape),
        task=ds.task,
        num_outputs=ds.num_classes if ds.task == "classification" else 1,
        l1=recipe.train.l1,
        l2=recipe.train.l2,
        dropout=recipe.train.dropout,
    )
    ctx._binary = loss == "binary_crossentropy"
    model = keras.Model(inputs, ctx.head(features, config.dropout), name="transfer")
    record = {
        "normalize": "transfer",
        "backbone": what,
        "backbone_input": [int(height), int(width), int(channels)],
        "scale": scale,
        "offset": offset,
        "cut": feature_layer(full, config.cut).name,
        "pretrained": config.pretrained,
    }
    return model, record


def unfreeze_top(model: Any, n_layers: int) -> int:
    """Make the top `n_layers` weight-bearing non-BatchNorm backbone layers trainable (0: none);
    BatchNorm stays frozen (a frozen Keras 3 BatchNorm runs in inference mode)."""
    from keras import layers

    trunk = model.get_layer(BACKBONE)
    trunk.trainable = True
    candidates = [
        layer
        for layer in trunk.layers
        if layer.weights and not isinstance(layer, layers.BatchNormalization)
    ]
    chosen = candidates[-n_layers:] if n_layers else []
    for layer in trunk.layers:
        layer.trainable = layer in chosen
    return len(chosen)


def fine_tune(
    model: Any,
    recipe: Any,
    train_ds: Any,
    val_ds: Any,
    callbacks: list[Any],
    loss: str,
    class_weight: dict[int, float] | None = None,
) -> int:
    """Phase 2: unfreeze the top layers, recompile at a lower constant LR, train on.

    The same callback objects continue (CSV history appends, the best checkpoint is kept
    across both phases). Returns the number of fine-tuning epochs asked for.
    """
    import keras

    from toolkit.train.optim import make_loss, make_optimizer, metrics_for

    config, cfg = recipe.transfer, recipe.train
    if not config.fine_tune_epochs or not config.pretrained:
        return 0
    unfreeze_top(model, config.fine_tune_layers or len(model.get_layer(BACKBONE).layers))
    lr = cfg.optimizer.learning_rate * config.fine_tune_lr_factor
    model.compile(
        optimizer=make_optimizer(cfg.optimizer, lr),
        loss=make_loss(loss, cfg.label_smoothing),
        metrics=metrics_for(loss),
    )
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.CSVLogger):
            callback.append = True
    start = len(model.history.epoch) if getattr(model, "history", None) else cfg.epochs
    model.fit(
        train_ds,
        validation_data=val_ds,
        initial_epoch=start,
        epochs=start + config.fine_tune_epochs,
        verbose=0,
        shuffle=False,
        callbacks=callbacks,
        class_weight=class_weight,  # phase 2 weighs classes as phase 1 did
    )
    return config.fine_tune_epochs
