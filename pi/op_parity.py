"""Run single-op int8 models here or on the emulated Pi; which kernels round the same?

    python pi/op_parity.py MODELS_DIR NAME[,NAME...]   (under qemu: pi/run_in_pi.sh MODELS_DIR ...)

For each NAME it reads NAME.tflite and NAME-x.npy (float inputs) from MODELS_DIR, quantizes the
inputs with the model's input scale/zero point, runs them one by one with LiteRT's default
kernels (XNNPACK where it applies) and with the reference kernels, and saves
NAME-{default,reference}-{machine}.npy beside them. Needs only numpy and ai_edge_litert, so the
same file runs as a bundle's run.py under pi/run_in_pi.sh. tests/test_pi.py compares the two
machines: it pins down which op's x86 and arm64 kernels differ (see README, Raspberry Pi).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    folder, names = Path(argv[0]), argv[1].split(",")
    kernels = {"default": OpResolverType.AUTO, "reference": OpResolverType.BUILTIN_REF}
    for name in names:
        x = np.load(folder / f"{name}-x.npy")
        for kind, resolver in kernels.items():
            interpreter = Interpreter(
                model_path=str(folder / f"{name}.tflite"),
                experimental_op_resolver_type=resolver,
                num_threads=1,
            )
            interpreter.allocate_tensors()
            inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            outputs = []
            for row in x:
                q = np.clip(np.round(row / scale + zero), info.min, info.max).astype(inp["dtype"])
                interpreter.set_tensor(inp["index"], q[None])
                interpreter.invoke()
                outputs.append(interpreter.get_tensor(out["index"]).copy())
            np.save(folder / f"{name}-{kind}-{platform.machine()}.npy", np.stack(outputs))
    print(f"ran {','.join(names)} on {platform.machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
