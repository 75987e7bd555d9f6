"""README.md of a firmware bundle: what fits where, how to build it, what the self-test proves."""

from __future__ import annotations

from typing import Any

from toolkit.core.targets import Target


def _kb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1024:,.1f} KB"


def readme_text(manifest: dict[str, Any], target: Target, sketch: str) -> str:
    """The bundle's README, from its manifest only (so it never disagrees with it)."""
    m, arena, flash, ram = manifest["model"], manifest["arena"], manifest["flash"], manifest["ram"]
    host = manifest["host_check"]
    io = manifest["io"]
    code = flash["tflm_code_estimate"]
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(manifest["ops"].items()))
    val = manifest.get("validation")
    if val and not val.get("error"):
        metric = val["metric"]
        drop = val.get("drop")
        shown = f"{drop:+.4f}" if drop is not None else "n/a"
        validated = (
            f"{metric['name']} {metric['value']:.4f} in {val['runtime']}/{val['provider']} "
            f"(drop {shown} vs the Keras model) on {val['data'].get('samples', '?')} samples"
        )
    else:
        validated = "no validation row in the export's report.json"
    notes = "".join(f"- {n}\n" for n in target.notes)
    return f"""# {manifest["name"]} for {target.name} (TFLite Micro)

{target.description}

| | bytes | budget |
|---|---|---|
| flash: model (`model_data.cc`, names/metadata stripped) | {m["flashed_bytes"]:,} | |
| flash: TFLM runtime + {len(manifest["ops"])} kernels (estimate) | {code:,} | |
| flash: reserved for your firmware | {flash["reserved"]:,} | |
| **flash total** | **{flash["total"]:,}** | {_kb(flash["budget"])} |
| RAM: tensor arena (`kTensorArenaSize`) | {ram["arena"]:,} | |
| RAM: reserved for your firmware | {ram["reserved"]:,} | |
| **RAM total** | **{ram["total"]:,}** | {_kb(ram["budget"])} |

- Arena: {arena["arena_bytes"]:,} bytes measured (the smallest 16-byte multiple that allocated
  and invoked in TFLM's kernels, {arena["steps"]} bisection steps; TFLM's allocation record:
  {arena["recorded_bytes"]:,} = {arena["head_bytes"]:,} activations + {arena["tail_bytes"]:,}
  persistent) + {arena["constant_bytes"] - arena["arena_bytes"]:,} bytes margin. Measured on a
  64-bit host, whose bookkeeping structs are larger than a 32-bit MCU's.
- Model: {m["exported_file"]} ({m["exported_bytes"]:,} bytes, sha256 `{m["exported_sha256"]}`)
  flashed as {m["flashed_bytes"]:,} bytes (schema floor {m["schema_floor_bytes"]:,}), sha256
  `{m["flashed_sha256"]}`.
- Ops ({len(manifest["ops"])}, all registered in `op_resolver.h`): {ops}.
- Input {io["input"]["shape"]} {io["input"]["dtype"]}, quantization (scale, zero point)
  {io["input"]["quantization"]}; output {io["output"]["shape"]} {io["output"]["dtype"]}
  {io["output"]["quantization"]}. Normalization is inside the model: quantize raw values.
- Validated: {validated}.
- Host check: on {host["samples"]} self-test inputs the flashed model gave the same bytes in TFLM
  as the exported file; {host["identical_to_litert_reference"]}/{host["samples"]} identical to
  LiteRT's reference kernels (max {host["max_step_diff_vs_litert_reference"]} steps).

## Build

CMake (any toolchain; TFLM built for your core):

    cmake -B build -DTFLM_ROOT=/path/to/tflite-micro -DTFLM_LIB=/path/to/libtensorflow-microlite.a
    cmake --build build && ./build/model_selftest   # on a host build; flash it otherwise

Arduino: open `arduino/{sketch}/{sketch}.ino` (library: Arduino TensorFlow Lite, or
esp-tflite-micro's port on ESP32), upload, Serial Monitor at 115200 baud.

Your application: link the `model` library (or add `model_data.cc`, `selftest_data.cc`,
`model_runner.cc`), then follow `model_runner.cc`: `tflite::GetModel(g_model_data)`,
`RegisterModelOps(resolver)`, `MicroInterpreter(model, resolver, arena, kTensorArenaSize)`,
`AllocateTensors()`, write `kInputElements` values of `InputType` into `input(0)`, `Invoke()`.

## Self-test

`RunModelSelftest()` runs one test input and compares every output byte with what TFLM gave on
the host: PASS means this board's build (CMSIS-NN / ESP-NN kernels included) computes the
integers that were validated. FAIL names how many outputs differ and by how many steps.

{notes}"""
