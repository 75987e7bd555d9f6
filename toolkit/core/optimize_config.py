"""The `optimize:` recipe section (and what the CLI flags build): prune, cluster, QAT, fine-tune.

Checked with pydantic before any work, so `sparsity: 1.2` or `structured: 3:4` fails with the
key named. Steps run in a fixed order: prune -> cluster -> QAT.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from toolkit.core.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PruneConfig(_Strict):
    """Magnitude pruning. `frequency` None picks one that fits the fine-tune's step count, so
    small datasets really get pruned (tfmot's default of 100 steps can exceed a whole run)."""

    sparsity: float | None = Field(None, gt=0, lt=1)
    schedule: Literal["constant", "polynomial"] = "polynomial"
    frequency: int | None = Field(None, gt=0)
    structured: Literal["2:4"] | None = None
    skip_layers: list[str] = []

    @model_validator(mode="after")
    def _sparsity_or_structured(self) -> PruneConfig:
        if self.structured is None and self.sparsity is None:
            raise ValueError("set sparsity (0 < s < 1) or structured: '2:4'")
        if self.structured is not None and self.sparsity not in (None, 0.5):
            raise ValueError(f"structured {self.structured} fixes sparsity at 0.5; drop sparsity")
        return self

    @property
    def target(self) -> float:
        return 0.5 if self.structured else float(self.sparsity or 0.5)


class ClusterConfig(_Strict):
    clusters: int = Field(16, ge=2, le=256)
    init: Literal["kmeans_plus_plus", "linear", "density", "random"] = "kmeans_plus_plus"
    skip_layers: list[str] = []


class QatConfig(_Strict):
    """Quantization-aware training; `preserve` keeps the zeros / shared values of earlier steps."""

    enabled: bool = True
    preserve: Literal["none", "sparsity", "clusters"] | None = None  # None: what earlier steps did


class OptimizeConfig(_Strict):
    prune: PruneConfig | None = None
    cluster: ClusterConfig | None = None
    qat: QatConfig | None = None
    epochs: int = Field(3, ge=1)
    learning_rate: float | None = Field(None, gt=0)  # None: the run's rate / 10
    batch_size: int | None = Field(None, ge=1)  # None: the run's batch size
    seed: int = 0

    @model_validator(mode="after")
    def _some_step(self) -> OptimizeConfig:
        if self.prune is None and self.cluster is None and not (self.qat and self.qat.enabled):
            raise ValueError("nothing to do: set prune, cluster and/or qat")
        if (
            self.qat
            and self.qat.preserve == "sparsity"
            and self.prune is None
            and self.cluster is None
        ):
            raise ValueError("qat.preserve: sparsity needs a prune (or cluster) step first")
        if self.qat and self.qat.preserve == "clusters" and self.cluster is None:
            raise ValueError("qat.preserve: clusters needs a cluster step first")
        return self

    @property
    def qat_enabled(self) -> bool:
        return bool(self.qat and self.qat.enabled)

    @property
    def qat_preserve(self) -> str:
        """Collaborative QAT mode: keep clusters if clustered, else sparsity if pruned."""
        if self.qat and self.qat.preserve is not None:
            return self.qat.preserve
        if self.cluster is not None:
            return "clusters"
        return "sparsity" if self.prune is not None else "none"

    def steps(self) -> list[str]:
        names = [n for n in ("prune", "cluster") if getattr(self, n) is not None]
        return [*names, "qat"] if self.qat_enabled else names


def parse_optimize(data: dict, source: str = "optimize") -> OptimizeConfig:
    """Validate a dict (recipe section or CLI flags); errors name the key, exit 2."""
    return _validate(data, lambda where: f"{source}.{where}" if where else source)


def _validate(data: dict, name: Any) -> OptimizeConfig:
    """Pydantic's first complaint as a one-line UserError; `name` maps its key path."""
    try:
        return OptimizeConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{name(where)}: {message}") from None


def from_flags(
    *,
    prune: float | None = None,
    structured: str | None = None,
    schedule: str = "polynomial",
    frequency: int | None = None,
    skip: list[str] | None = None,
    cluster: int | None = None,
    cluster_init: str = "kmeans_plus_plus",
    qat: bool = False,
    preserve: str | None = None,
    epochs: int = 3,
    learning_rate: float | None = None,
    batch_size: int | None = None,
) -> OptimizeConfig:
    """The CLI's flags as an OptimizeConfig (same validation as a recipe section)."""
    data: dict = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size}
    if prune is not None or structured is not None:
        data["prune"] = {"sparsity": prune, "structured": structured, "schedule": schedule,
                         "frequency": frequency, "skip_layers": list(skip or [])}  # fmt: skip
    if cluster is not None:
        data["cluster"] = {
            "clusters": cluster,
            "init": cluster_init,
            "skip_layers": list(skip or []),
        }
    if qat:
        data["qat"] = {"enabled": True, "preserve": preserve}
    flags = {"prune.sparsity": "--prune", "prune.structured": "--structured",
             "cluster.clusters": "--cluster", "epochs": "--epochs"}  # fmt: skip
    return _validate(data, lambda where: flags.get(where, where or "optimize"))
