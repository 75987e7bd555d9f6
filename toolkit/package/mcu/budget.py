"""Does a model fit the board? Flash and RAM needs against a firmware target's budgets.

Refused before anything is written, in one line: what the model needs, what the board has,
and the cheapest fix. Pruning and clustering do not shrink a TFLM flatbuffer (its int8
weights stay dense), so for flash and RAM alike the fix the ladder knows that works is a
narrower model (a smaller MobileNet alpha or fewer filters); a wider precision halves first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from toolkit.core.errors import UserError
from toolkit.core.targets import Target

KB = 1024


@dataclass
class Needs:
    """What the firmware needs on the board, in bytes."""

    flash: int  # model + runtime + kernels (estimate) + the profile's reserved flash
    ram: int  # arena (measured + margin) + the profile's reserved RAM
    model_bytes: int
    code_bytes: int
    arena_bytes: int

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def arena_size(measured: int, target: Target) -> int:
    """The arena constant a firmware declares: measured + margin, rounded up to 16 bytes."""
    total = measured + round(target.arena_margin_kb * KB)
    return -(-total // 16) * 16


def needs_of(measure: Any, model_bytes: int, target: Target) -> Needs:
    """Flash and RAM of the stripped model on this target (see `measure_arena`)."""
    code = measure.flash_estimate_bytes - measure.model_bytes
    arena = arena_size(measure.arena_bytes, target)
    return Needs(
        flash=model_bytes + code + target.flash_reserved_kb * KB,
        ram=arena + target.ram_reserved_kb * KB,
        model_bytes=model_bytes,
        code_bytes=code,
        arena_bytes=arena,
    )


def _width_factor(have: int, need: int) -> float:
    """Width scale that brings a conv net's size (quadratic in width) from need to have."""
    return max(math.floor(math.sqrt(max(have, 1) / need) * 20) / 20, 0.05)


def check_fits(needs: Needs, measure: Any, target: Target, precision: str, name: str) -> None:
    """Raise a one-line UserError when the model is over the target's flash or RAM budget."""
    problems, fixes = [], []
    if target.flash_kb is not None and needs.flash > target.flash_kb * KB:
        room = target.flash_kb * KB - target.flash_reserved_kb * KB - needs.code_bytes
        problems.append(
            f"{needs.flash / KB:,.0f} KB flash (model {needs.model_bytes / KB:,.0f} KB + TFLM "
            f"~{needs.code_bytes / KB:,.0f} KB + reserved {target.flash_reserved_kb} KB) but "
            f"{target.name} has {target.flash_kb:,} KB"
        )
        if precision == "int16x8":
            fixes.append("export tflite-int8 (int16x8 keeps wider biases and activations)")
        if room < KB:  # nothing useful fits beside TFLM and the reserved flash
            fixes.append(
                f"none for the model: TFLM (~{needs.code_bytes / KB:,.0f} KB) and the reserved "
                f"{target.flash_reserved_kb} KB alone exceed {target.flash_kb:,} KB (a board "
                "with more flash, or less flash_reserved_kb)"
            )
        else:
            fixes.append(
                f"a model with at most {room / KB:,.0f} KB of weights: width x"
                f"{_width_factor(room, needs.model_bytes):.2f} (a smaller alpha or fewer "
                "filters; pruning and clustering do not shrink a TFLM flatbuffer)"
            )
    if target.ram_kb is not None and needs.ram > target.ram_kb * KB:
        room = target.ram_kb * KB - target.ram_reserved_kb * KB
        problems.append(
            f"{needs.ram / KB:,.0f} KB RAM (arena {needs.arena_bytes / KB:,.0f} KB, of which "
            f"activations {measure.head_bytes / KB:,.0f} KB, + reserved "
            f"{target.ram_reserved_kb} KB) but {target.name} has {target.ram_kb:,} KB"
        )
        if precision == "int16x8":
            fixes.append("export tflite-int8 (int16 activations take twice the arena)")
        left = room - measure.tail_bytes - (needs.arena_bytes - measure.arena_bytes)
        fixes.append(
            f"activations under {left / KB:,.1f} KB: a smaller input size or narrower early "
            "layers (a smaller alpha or fewer filters)"
            if left >= KB
            else f"none for the model: its persistent arena ({measure.tail_bytes / KB:,.1f} KB) "
            f"and the reserved {target.ram_reserved_kb} KB alone exceed {target.ram_kb:,} KB"
        )
    if problems:
        raise UserError(
            f"{name} does not fit {target.name}: needs {'; and '.join(problems)}; cheapest fix: "
            f"{'; or '.join(dict.fromkeys(fixes))} (--ignore-budget packages it anyway)"
        )
