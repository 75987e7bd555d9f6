"""tf.distribute for the train stage: MirroredStrategy on one host, MultiWorkerMirroredStrategy
across hosts (Keras 3 on the TensorFlow backend runs both inside `model.fit`).

What this module settles, so the stage stays one code path:
- the cluster comes from TF_CONFIG (`train --workers/--worker-index` only writes TF_CONFIG),
  checked first so a typo is one line, not a hang in gRPC;
- `train.batch_size` is the global batch; tf.data shards by DATA (every worker reads the same
  seeded order and keeps its slice), which works for in-memory and file datasets alike;
- only the chief writes the run directory; other workers train into a temp dir that is
  removed; BackupAndRestore keeps a per-worker backup so a restarted cluster resumes;
- after training the model is copied out of the strategy, so evaluation and saving are plain
  single-device Keras (a distributed `predict` would split the test set across workers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError

STRATEGIES = ("none", "mirrored", "multi-worker")


@dataclass
class Plan:
    """The strategy a run trains under and this process's place in the cluster."""

    kind: str = "none"
    strategy: Any = None
    chief: bool = True
    workers: int = 1
    index: int = 0
    replicas: int = 1
    backup: bool = False
    communication: str = "auto"

    @property
    def distributed(self) -> bool:
        return self.strategy is not None

    def scope(self) -> Any:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def tf_config_from_flags(workers: str, index: int | None) -> str:
    """`host:port,host:port` + this worker's index -> TF_CONFIG JSON (checked)."""
    hosts = [w.strip() for w in workers.split(",") if w.strip()]
    if index is None:
        raise UserError("--workers needs --worker-index I (0 is the chief)")
    config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    check_cluster(config)
    return json.dumps(config)


def read_tf_config() -> dict[str, Any]:
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        raise UserError(
            "multi-worker training needs the cluster: set TF_CONFIG or pass "
            "--workers HOST:PORT,HOST:PORT --worker-index I"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UserError(f"TF_CONFIG is not JSON ({err.msg} at character {err.pos})") from None
    check_cluster(config)
    return config


def check_cluster(config: Any) -> tuple[list[str], str, int]:
    """(addresses, this task's type, index); a malformed cluster is one UserError line."""
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise UserError('TF_CONFIG needs {"cluster": {"worker": [...]}, "task": {...}}')
    cluster, task = config["cluster"], config.get("task") or {}
    addresses: list[str] = []
    for kind in ("chief", "worker"):
        entries = cluster.get(kind, [])
        if not isinstance(entries, list):
            raise UserError(f"TF_CONFIG cluster.{kind} must be a list of HOST:PORT")
        addresses += entries
    if not addresses:
        raise UserError("TF_CONFIG names no workers (cluster.worker is empty)")
    for address in addresses:
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"TF_CONFIG worker {address!r} is not HOST:PORT")
    twice = sorted({a for a in addresses if addresses.count(a) > 1})
    if twice:
        raise UserError(
            f"TF_CONFIG names {', '.join(twice)} twice: each worker needs its own HOST:PORT"
        )
    kind, index = task.get("type"), task.get("index")
    if kind not in ("chief", "worker") or not isinstance(index, int):
        raise UserError('TF_CONFIG task must be {"type": "worker"|"chief", "index": N}')
    if not 0 <= index < len(cluster.get(kind, [])):
        raise UserError(
            f"TF_CONFIG task index {index} is outside cluster.{kind} "
            f"({len(cluster.get(kind, []))} entries)"
        )
    return addresses, kind, index


def make_plan(cfg: Any) -> Plan:
    """The Plan for a recipe's `distribute:` section (None: no strategy). Must run before
    TensorFlow executes anything: collective ops are configured at context start."""
    kind = cfg.strategy if cfg is not None else "none"
    if kind == "none":
        return Plan()
    import tensorflow as tf

    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Plan("mirrored", strategy, replicas=strategy.num_replicas_in_sync,
                    backup=cfg.backup)  # fmt: skip
    config = read_tf_config()
    addresses, task, index = check_cluster(config)
    impl = tf.distribute.experimental.CommunicationImplementation
    chosen = {"auto": impl.AUTO, "ring": impl.RING, "nccl": impl.NCCL}[cfg.communication]
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=chosen
            )
        )
    except RuntimeError as err:  # "Collective ops must be configured at program startup"
        raise UserError(f"cannot start multi-worker training: {str(err).splitlines()[0]}") from None
    has_chief = bool(config["cluster"].get("chief"))
    chief = task == "chief" or (not has_chief and index == 0)
    return Plan("multi-worker", strategy, chief=chief, workers=len(addresses), index=index,
                replicas=strategy.num_replicas_in_sync, backup=cfg.backup,
                communication=cfg.communication)  # fmt: skip


def shard(dataset: Any) -> Any:
    """Shard by DATA: every worker reads the same seeded order and keeps its share of each
    global batch (FILE sharding would need as many files as workers, and our pipelines read
    in-memory arrays or a list of paths)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """Where a non-chief worker's callbacks write; removed whatever happens."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def backup_dir(final: Path, plan: Plan, recipe_text: str) -> Path:
    """BackupAndRestore's folder, keyed by the recipe so a changed recipe never resumes an old
    run: the chief's beside the run dir, another worker's under the temp dir."""
    key = hashlib.sha256(recipe_text.encode()).hexdigest()[:10]
    if plan.chief:
        return final.parent / f".{final.name}.backup-{key}"
    return Path(tempfile.gettempdir()) / f"keras-edge-backup-{final.name}-{key}-w{plan.index}"


def backup_callback(folder: Path) -> Any:
    import keras

    folder.mkdir(parents=True, exist_ok=True)
    return keras.callbacks.BackupAndRestore(str(folder), save_freq="epoch", delete_checkpoint=True)


def defer_keras_build(model: Any) -> None:
    """Keras 3.15's fit under a strategy with several workers first "symbolically builds"
    from one batch by `strategy.reduce("MEAN", (x, y))`, which fails on the nested per-replica
    batch ("Attempt to convert a value (PerReplica...)"). A model without a remembered
    strategy skips that step and takes the strategy of the scope fit runs in (the same one),
    so the stage forgets it here and calls fit inside `Plan.scope()`."""
    if getattr(model, "_distribute_strategy", None) is not None:
        model._distribute_strategy = None


@contextlib.contextmanager
def keras_multi_worker_logs(plan: Plan) -> Iterator[None]:
    """Keras 3.15 reduces each step's logs across workers with `strategy.reduce("MEAN", v,
    axis=0)`, which fails on the scalar losses and metrics ("Invalid reduction dimension 0
    for input with 0 dimensions"): multi-worker `fit` cannot run a single step. While fit
    runs, scalars are reduced over replicas only (axis=None); anything else as Keras does."""
    if plan.kind != "multi-worker":
        yield
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str = "auto") -> Any:
        if reduction not in ("auto", "mean") or not tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return original(values, strategy, reduction)

        def one(value: Any) -> Any:
            local = strategy.experimental_local_results(value)[0]
            return strategy.reduce("MEAN", value, axis=0 if local.shape.rank else None)

        return tree.map_structure(one, values)

    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original


def plain_copy(model: Any) -> Any:
    """The trained model outside any strategy (call it outside `Plan.scope()`): the same
    architecture and weights on one device."""
    from toolkit.core.model_copy import clone_with_weights

    return clone_with_weights(model)


def describe(plan: Plan) -> dict[str, Any]:
    """What metrics.json records about the run's distribution."""
    multi = plan.kind == "multi-worker"
    return {"strategy": plan.kind, "workers": plan.workers, "replicas": plan.replicas,
            "communication": plan.communication if multi else None}  # fmt: skip
