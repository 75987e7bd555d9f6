"""Recipes: one YAML file says which data, which builder and how to train.

Validated with pydantic so a typo names the bad key (`train.epoch: extra key not allowed`)
instead of being ignored. CLI flags override recipe values through `with_overrides`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.core.errors import UserError, validation_message
from toolkit.core.optimize_config import OptimizeConfig
from toolkit.core.resources import resolve_yaml
from toolkit.data.base import DataSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    name: str
    image_size: tuple[int, int] | None = None
    color_mode: Literal["grayscale", "rgb"] | None = None
    target: str | None = None
    task: Literal["classification", "regression"] | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    sequence_length: int | None = Field(None, gt=0)
    max_samples: int | None = Field(None, gt=0)

    def spec(self) -> DataSpec:
        return DataSpec(**self.model_dump())


class AugmentConfig(_Strict):
    """Training-only image augmentation (never part of the exported model)."""

    flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = None
    rotation: float = Field(0.0, ge=0, le=0.5)  # fraction of a full turn
    zoom: float = Field(0.0, ge=0, lt=1)
    contrast: float = Field(0.0, ge=0, lt=1)
    translation: float = Field(0.0, ge=0, lt=1)


class PreprocessConfig(_Strict):
    # standardize: Normalization layer adapted on training data (mean/std per channel/feature);
    # rescale: value range -> [0, 1]; symmetric: value range -> [-1, 1] (what MobileNet
    # weights expect); none; auto: the builder's preference.
    normalize: Literal["standardize", "rescale", "symmetric", "none", "auto"] = "auto"
    augment: AugmentConfig = AugmentConfig()


class ModelConfig(_Strict):
    builder: str
    args: dict[str, Any] = {}


class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop", "adagrad"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd / rmsprop
    nesterov: bool = False
    weight_decay: float | None = Field(None, ge=0)
    clipnorm: float | None = Field(None, gt=0)


class ScheduleConfig(_Strict):
    name: Literal["constant", "cosine", "exponential", "step"] = "constant"
    warmup_epochs: int = Field(0, ge=0)
    decay_rate: float = Field(0.5, gt=0, le=1)  # exponential / step
    step_epochs: int = Field(10, gt=0)  # step: decay every N epochs
    min_lr_fraction: float = Field(0.0, ge=0, lt=1)  # cosine floor


class EarlyStoppingConfig(_Strict):
    monitor: str = "val_loss"
    patience: int = Field(10, ge=1)
    min_delta: float = 0.0


class ReduceLRConfig(_Strict):
    monitor: str = "val_loss"
    patience: int = Field(4, ge=1)
    factor: float = Field(0.5, gt=0, lt=1)
    min_lr: float = 1e-6


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    loss: Literal[
        "auto",
        "sparse_categorical_crossentropy",
        "categorical_crossentropy",
        "binary_crossentropy",
        "mse",
        "mae",
        "huber",
    ] = "auto"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    dropout: float | None = Field(None, ge=0, lt=1)  # overrides the builder's default
    early_stopping: EarlyStoppingConfig | None = None
    reduce_lr: ReduceLRConfig | None = None
    checkpoint: Literal["best", "last"] = "best"
    seed: int = 0
    tensorboard: bool = True
    # balanced: each class weighs n_samples / (n_classes * its count) in the loss
    # (scikit-learn's compute_class_weight), so a rare class is not simply ignored.
    class_weight: Literal["balanced"] | None = None


class TransferConfig(_Strict):
    """Transfer learning: a pretrained backbone, cut at its features, with a new head.

    Phase 1 trains the head for `train.epochs` with the backbone frozen; phase 2 (when
    `fine_tune_epochs` > 0) unfreezes the top `fine_tune_layers` backbone layers at
    `learning_rate * fine_tune_lr_factor`, BatchNorm kept in inference mode throughout.
    """

    backbone: str  # a Keras file (.keras, .h5, SavedModel dir, run dir) or a builder name
    weights: str | None = None  # builder backbones: imagenet | PATH | none
    cut: str = "auto"  # layer whose output is the features; auto: what feeds the last Dense
    input_size: tuple[int, int] | None = None  # builder backbones; files use their own size
    input_range: tuple[float, float] | None = None  # file backbones: default input_spec or 0..1
    pretrained: bool = True  # false: same architecture, fresh weights, all trainable (baseline)
    fine_tune_layers: int = Field(0, ge=0)
    fine_tune_epochs: int = Field(0, ge=0)
    fine_tune_lr_factor: float = Field(0.1, gt=0, le=1)
    head_dense: int = Field(0, ge=0)  # an extra ReLU Dense layer before the output (0: none)
    dropout: float = Field(0.2, ge=0, lt=1)


class ParamRange(_Strict):
    """One searched value: `choices`, or a `low`..`high` range (int when both are ints)."""

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)


class SearchConfig(_Strict):
    """`keras-edge tune`: dotted recipe keys -> ranges, plus optional int8 constraints."""

    params: dict[str, ParamRange] = {}
    trial_epochs: int | None = Field(None, ge=1)  # default: train.epochs
    prune: bool = True
    max_int8_kb: float | None = Field(None, gt=0)  # int8 TFLite file size bound
    max_int8_latency_ms: float | None = Field(None, gt=0)  # p50 batch-1 latency in LiteRT
    grid_points: int = Field(3, ge=2)  # grid sampler: points per numeric range


class DistributeConfig(_Strict):
    """tf.distribute for training (docs/scale-out.md). `train.batch_size` stays the *global*
    batch: each of N replicas gets batch_size / N. The cluster (hosts, this worker's index)
    is not part of a recipe: it comes from TF_CONFIG or `train --workers/--worker-index`."""

    strategy: Literal["none", "mirrored", "multi-worker"] = "none"
    backup: bool = True  # BackupAndRestore: a restarted run resumes at its last epoch
    communication: Literal["auto", "ring", "nccl"] = "auto"  # multi-worker all-reduce


class Recipe(_Strict):
    name: str
    description: str = ""
    dataset: DatasetConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    transfer: TransferConfig | None = None
    search: SearchConfig | None = None
    # Prune / cluster / QAT after training (`keras-edge train` then writes RUN/optimized/);
    # the same model as `keras-edge optimize`'s flags, so both are checked alike.
    optimize: OptimizeConfig | None = None
    distribute: DistributeConfig | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError("must be a plain name (no '/', not starting with '.')")
        return value

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        """A copy with dotted keys replaced (`{"train.epochs": 3}`), re-validated."""
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if node.get(key) is None:  # an absent optional section (transfer: null)
                    node[key] = {}
                node = node[key]
                if not isinstance(node, dict):
                    raise UserError(f"cannot set {dotted!r}: {key!r} is not a section")
            node[leaf] = value
        return parse_recipe(data, source="command-line overrides")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping; a bad key or type becomes a one-line UserError."""
    if not isinstance(data, dict):
        raise UserError(f"recipe {source}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise UserError(validation_message(err, "recipe", source)) from None


# A recipe is a few dozen values; YAML aliases can make a tiny file expand to billions of
# nodes when dumped ("billion laughs"), and deep nesting overflows PyYAML's recursion.
MAX_RECIPE_NODES = 100_000
MAX_RECIPE_BYTES = 1024**2


def _check_node_count(data: Any, source: str) -> None:
    """Refuse a document whose expanded size (aliases counted each time) is absurd."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_RECIPE_NODES:
            raise UserError(
                f"recipe {source}: more than {MAX_RECIPE_NODES:,} values once YAML aliases are "
                "expanded; a recipe is a few dozen keys (remove the anchors/aliases)"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_recipe(name_or_path: str) -> Recipe:
    """Load a built-in recipe by name (`digits-cnn`) or a user's YAML file by path."""
    path = resolve_yaml(name_or_path, "models", "recipe")
    try:
        if Path(path).stat().st_size > MAX_RECIPE_BYTES:
            raise UserError(f"recipe {path} is larger than {MAX_RECIPE_BYTES:,} bytes")
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"cannot read recipe {path}: {err.strerror or err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"recipe {path} is not valid YAML{where}") from None
    except RecursionError:
        raise UserError(f"recipe {path} is nested too deeply to be a recipe") from None
    _check_node_count(data, str(path))
    return parse_recipe(data, source=str(path))
