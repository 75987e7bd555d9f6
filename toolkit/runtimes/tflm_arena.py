"""The tensor arena a model needs in TFLite Micro, measured; and the flash it needs, estimated.

Firmware authors size `tensor_arena[]` by trial and error on the board. Here the smallest arena
that both allocates and invokes is found by bisection in the host build of TFLM's kernels, and
checked against TFLM's own allocation record (`RecordingMicroAllocator`, printed, not
returned). The host is 64-bit, so TFLM's bookkeeping structs are larger than on a 32-bit
Cortex-M or ESP32: the host figure is an upper bound for the same kernels. Optimized kernels
(CMSIS-NN, ESP-NN) may ask for scratch buffers the reference kernels do not, which is what a
target profile's arena margin is for.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError

ALIGN = 16  # TFLM aligns the arena start and its buffers to 16 bytes
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")

# Code size (bytes of flash) on a Cortex-M4F, measured here: TFLM 90b983c reference kernels,
# arm-none-eabi-g++ 12.2 -Os -ffunction-sections, linked with --gc-sections and newlib (nosys)
# for digits-cnn, keywords-ds-cnn and sensor-anomaly-autoencoder (docs/mcu.md). RUNTIME_FLASH is
# the interpreter, allocator, flatbuffer parsing, newlib's stdio behind DebugLog, libgcc/libm;
# a kernel's figure is its linked code (optimized kernels such as CMSIS-NN differ). Ops that
# were not measured get OTHER_KERNEL_FLASH or the estimate noted.
RUNTIME_FLASH = 60 * 1024
KERNEL_FLASH = {
    "CONV_2D": 5138,
    "DEPTHWISE_CONV_2D": 4080,
    "FULLY_CONNECTED": 4503,
    "SOFTMAX": 4409,
    "MEAN": 4020,
    "SUB": 5611,
    "MUL": 5520,
    "MAX_POOL_2D": 2458,
    "AVERAGE_POOL_2D": 2458,  # the same pooling object as MAX_POOL_2D
    "RESHAPE": 928,
    "TRANSPOSE_CONV": 6 * 1024,  # estimate
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 12 * 1024,  # estimate
}
OTHER_KERNEL_FLASH = 4 * 1024  # estimate for ops not measured


@dataclass
class ArenaMeasure:
    """What a model needs on a microcontroller: RAM for the arena, flash for the model + code."""

    arena_bytes: int  # smallest arena (multiple of 16) that allocated and invoked here
    recorded_bytes: int  # TFLM's own record of what it used in that arena
    head_bytes: int  # reusable activations (the memory planner's part)
    tail_bytes: int  # persistent: tensor structs, op data, quantization params
    steps: int  # arena sizes tried after the first fit (record bracket + bisection)
    model_bytes: int  # the .tflite as it would be flashed
    flash_estimate_bytes: int  # model bytes + runtime + kernels (Cortex-M4F, see KERNEL_FLASH)
    kernel_flash_bytes: dict[str, int] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For report.json and inspect --json."""
        return asdict(self)


def _record(text: str) -> tuple[int, int, int]:
    def grab(pattern: re.Pattern[str]) -> int:
        match = pattern.search(text)
        return int(match.group(1)) if match else 0

    return grab(_TOTAL), grab(_HEAD), grab(_TAIL)


def _try(content: bytes, size: int, path: Path, x: np.ndarray | None) -> tuple[bool, str]:
    """Whether `size` bytes allocate and invoke; plus the allocation record when they do."""
    from toolkit.runtimes.tflm import captured_fd2, open_interpreter

    try:
        interp, _ = open_interpreter(content, size, path)
    except RuntimeError:
        return False, ""
    detail = interp.get_input_details(0)
    sample = np.zeros(tuple(detail["shape"]), detail["dtype"]) if x is None else x
    with captured_fd2() as printed:
        try:
            interp.set_input(sample, 0)
            interp.invoke()
        except RuntimeError:
            return False, ""
        interp.print_allocations()
    return True, "".join(printed)


def model_ops(content: bytes) -> list[str]:
    """The builtin op names a .tflite uses, sorted (custom ops as CUSTOM:<name>)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    used: set[str] = set()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            name = names.get(builtin, str(builtin))
            if name == "CUSTOM":
                name = f"CUSTOM:{(code.CustomCode() or b'').decode(errors='replace')}"
            used.add(name)
    return sorted(used)


def flash_estimate(model_bytes: int, ops: list[str]) -> tuple[int, dict[str, int]]:
    """Model bytes + TFLM runtime + one kernel per distinct op (code sizes: see KERNEL_FLASH)."""
    kernels = {op: KERNEL_FLASH.get(op, OTHER_KERNEL_FLASH) for op in ops}
    return model_bytes + RUNTIME_FLASH + sum(kernels.values()), kernels


def measure_arena(
    path: str | Path, x: np.ndarray | None = None, content: bytes | None = None
) -> ArenaMeasure:
    """Bisect the smallest 16-byte-multiple arena that allocates and invokes `path` in TFLM.

    `x` is one input in the model's input dtype and shape (default zeros: the arena does not
    depend on values). `content` measures other bytes than the file's (e.g. the stripped model
    a firmware bundle flashes). Raises MissingOp when TFLM lacks one of the model's ops.
    """
    from toolkit.runtimes.litert import check_tflite_bytes
    from toolkit.runtimes.tflm import ARENA_MAX, tflm_available

    path = Path(path)
    if content is None:
        check_tflite_bytes(path)
        content = path.read_bytes()
    if not tflm_available():
        raise UserError(
            "measuring an arena needs the tflite-micro package: pip install tflite-micro"
        )
    high = max(1 << 14, 4 * len(content))
    while True:
        ok, record = _try(content, high, path, x)
        if ok:
            break
        if high >= ARENA_MAX:
            raise UserError(f"{path.name} does not fit a TFLM arena of {ARENA_MAX:,} bytes")
        high *= 2
    # TFLM's record of what it used in the big arena brackets the answer: try it first, and
    # one 16-byte step below it, so bisection usually has nothing left to do; when the record
    # is off, the bracket widens to the whole range and bisection finds the true minimum.
    recorded = -(-_record(record)[0] // ALIGN)  # in ALIGN units
    high_units, best_record, steps = -(-high // ALIGN), record, 0
    if recorded and recorded < high_units:
        ok, rec = _try(content, recorded * ALIGN, path, x)
        steps += 1
        if ok:
            high_units, best_record = recorded, rec
    low = max(recorded - 1, 0)  # in ALIGN units; must fail (or be 0)
    if low and low < high_units:
        steps += 1
        if _try(content, low * ALIGN, path, x)[0]:
            low = 0  # the record over-counts here: search the whole range below
    else:
        low = 0
    while high_units - low > 1:
        mid = (low + high_units) // 2
        ok, rec = _try(content, mid * ALIGN, path, x)
        steps += 1
        if ok:
            high_units, best_record = mid, rec
        else:
            low = mid
    total, head, tail = _record(best_record)
    arena = high_units * ALIGN
    if total == 0 or total > arena:
        raise UserError(
            f"{path.name}: TFLM's allocation record ({total:,} bytes) does not fit the measured "
            f"arena ({arena:,} bytes); the measurement cannot be trusted"
        )
    ops = model_ops(content)
    flash, kernels = flash_estimate(len(content), ops)
    return ArenaMeasure(arena, total, head, tail, steps, len(content), flash, kernels, ops)


def measure_arena_isolated(path: str | Path, timeout: float = 300) -> dict[str, Any]:
    """`measure_arena(path).as_dict()` computed in a child process, so a TFLM abort on an odd
    model becomes {"error": ...} instead of ending the caller (inspect, reports)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "toolkit.runtimes.tflm_arena", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"TFLM arena measurement took over {timeout:g} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    if proc.returncode < 0:
        import signal

        return {
            "error": f"TFLM crashed on {Path(path).name} ({signal.Signals(-proc.returncode).name})"
        }
    return {"error": (proc.stderr.strip().splitlines() or ["TFLM failed"])[-1]}


if __name__ == "__main__":  # the child of measure_arena_isolated: one JSON line, or exit 2
    import json
    import sys

    try:
        print(json.dumps(measure_arena(sys.argv[1]).as_dict()))
    except UserError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
