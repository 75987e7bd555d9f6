"""Device target profiles (export/*.yaml): what a bundle for a device holds and how it runs.

A profile names the artifact (a row of the format table), its I/O dtype, the runtime options
(LiteRT delegate and threads, or ONNX Runtime providers), alternatives to ship beside it, the
accuracy budget and the pip requirements of the device. Profiles are validated here, before
any conversion, so a typo fails in a second with the key named. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from toolkit.core.errors import UserError, validation_message
from toolkit.core.resources import builtin_dir, builtin_names, resolve_yaml

# What `pip install` brings each runtime; run.py names it when the import fails.
RUNTIME_PACKAGES = {
    "litert": "ai-edge-litert",
    "onnxruntime": "onnxruntime",
    "tflm": "tflite-micro",
}
# The I/O dtype each precision gives (ONNX QDQ int8 and fp16 keep float32 I/O).
_IO_DTYPES = {
    "tflite-int8": "int8",
    "tflite-uint8": "uint8",
    "tflite-int16x8": "int16",
}


def io_dtype_of(artifact: str) -> str:
    """The input/output dtype an artifact of the format table has."""
    return _IO_DTYPES.get(artifact, "float32")


class Target(BaseModel):
    """One device target profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    platform: str  # e.g. linux-aarch64: informative, shown in the manifest and README
    artifact: str  # the primary artifact, e.g. tflite-int8
    io_dtype: Literal["int8", "uint8", "int16", "float32"]
    alternatives: list[str] = []
    delegate: Literal["xnnpack", "reference"] = "xnnpack"  # LiteRT only
    providers: list[str] = []  # ONNX Runtime preference order (the first available is used)
    threads: int | None = Field(default=None, ge=0)  # None/0: the runtime's default
    max_drop: float | None = Field(default=None, ge=0)  # accuracy budget, metric units
    # Weight scales the device's kernels take: many NPUs, DSPs and older accelerators run
    # per-tensor only. Checked on the file (`package`), and `--fits` ladders quantize so.
    granularity: Literal["per-channel", "per-tensor"] | None = None
    # Drift limits written into a bundle's manifest (`drift.threshold`); None: PSI 0.2, KS 0.1.
    # `keras-edge serve --drift-threshold` still overrides the PSI limit at serve time.
    drift_psi: float | None = Field(default=None, gt=0)
    drift_ks: float | None = Field(default=None, gt=0)
    edgetpu: bool = False  # check the primary's ops against the Edge TPU supported ops
    # Bundle int8 LiteRT models without their trailing SOFTMAX; run.py applies it in float.
    # LiteRT's optimized int8 softmax rounds differently per CPU; the logits do not.
    host_softmax: bool = False
    runtime_package: str | None = None  # pip package of the primary runtime (default by runtime)
    requirements: list[str] = []
    optional_requirements: list[str] = []
    notes: list[str] = []
    # Microcontrollers: `firmware: tflm` makes `package` write C++ sources for TFLite Micro
    # (docs/mcu.md) instead of a Python bundle; the budgets are what the board has.
    firmware: Literal["tflm"] | None = None
    flash_kb: int | None = Field(default=None, gt=0)  # flash for model + TFLM + application
    ram_kb: int | None = Field(default=None, gt=0)  # SRAM for the arena + application
    flash_reserved_kb: int = Field(default=0, ge=0)  # what the rest of the firmware takes
    ram_reserved_kb: int = Field(default=0, ge=0)  # stack, heap and buffers of the application
    arena_margin_kb: float = Field(default=0, ge=0)  # headroom for optimized kernels' scratch

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        from toolkit.core.formats import BY_NAME

        for name in (self.artifact, *self.alternatives):
            if name not in BY_NAME:
                known = ", ".join(n for n in BY_NAME if not n.startswith("keras"))
                raise ValueError(f"unknown artifact {name!r}; known: {known}")
            if name.startswith("keras"):
                raise ValueError(f"{name} is the Keras reference, not a device artifact")
        if self.artifact in self.alternatives:
            raise ValueError(f"{self.artifact} is both the artifact and an alternative")
        actual = io_dtype_of(self.artifact)
        if self.io_dtype != actual:
            raise ValueError(f"io_dtype {self.io_dtype} but {self.artifact} has {actual} I/O")
        if self.edgetpu and self.io_dtype not in ("int8", "uint8"):
            raise ValueError("edgetpu: true needs a full-integer artifact (int8 or uint8 I/O)")
        if self.host_softmax and self.edgetpu:
            raise ValueError("host_softmax and edgetpu exclude each other (the TPU runs softmax)")
        if self.firmware and self.io_dtype not in ("int8", "uint8", "int16"):
            raise ValueError("firmware: tflm needs a full-integer tflite artifact (int8 I/O)")
        if self.firmware is None and (self.flash_kb or self.ram_kb):
            raise ValueError("flash_kb / ram_kb budgets apply to firmware targets (firmware: tflm)")
        if self.flash_kb is not None and self.flash_reserved_kb >= self.flash_kb:
            raise ValueError("flash_reserved_kb leaves no flash for the model")
        if self.ram_kb is not None and self.ram_reserved_kb >= self.ram_kb:
            raise ValueError("ram_reserved_kb leaves no RAM for the tensor arena")
        if self.providers and self.runtime != "onnxruntime":
            raise ValueError("providers apply to ONNX artifacts; LiteRT takes a delegate")
        return self

    @property
    def runtime(self) -> str:
        """The runtime of the primary artifact ('litert', 'onnxruntime' or, on firmware, 'tflm')."""
        from toolkit.core.formats import get

        return "tflm" if self.firmware else get(self.artifact).runtime

    @property
    def artifacts(self) -> list[str]:
        """Primary first, then the alternatives."""
        return [self.artifact, *self.alternatives]

    def pip_package(self, artifact: str | None = None) -> str:
        """The pip package that provides the runtime of an artifact on this target."""
        from toolkit.core.formats import get

        runtime = get(artifact or self.artifact).runtime
        if (artifact in (None, self.artifact)) and self.runtime_package:
            return self.runtime_package
        return RUNTIME_PACKAGES[runtime]

    def requirement_lines(self) -> list[str]:
        """requirements.txt: the profile's list, or numpy + Pillow + the primary runtime."""
        lines = list(self.requirements) or ["numpy>=1.23", "pillow>=9", self.pip_package()]
        return lines + [f"# {r}" for r in self.optional_requirements]


def parse_target(data: Any, source: str = "<target>") -> Target:
    """Validate a profile mapping; a bad key or value becomes a one-line UserError."""
    if not isinstance(data, dict):
        raise UserError(f"target {source}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return Target.model_validate(data)
    except ValidationError as err:
        raise UserError(validation_message(err, "target", source)) from None


def load_target(name_or_path: str | Path) -> Target:
    """A built-in target by name (`raspberry-pi`) or a user's YAML profile by path."""
    path = resolve_yaml(str(name_or_path), "export", "target")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"target {path}: not valid YAML ({err.__class__.__name__})") from None
    return parse_target(data, str(path))


def list_targets() -> list[Target]:
    """Every built-in profile, by name."""
    return [load_target(builtin_dir("export") / f"{name}.yaml") for name in builtin_names("export")]
