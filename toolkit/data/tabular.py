"""`csv:PATH`: a table with one target column (or several, comma-separated in `target`);
every other column is a numeric feature.

Bad cells are reported, never silently imputed: a model trained on a quietly filled-in NaN
column behaves differently on the device that sees the real values. Rows in messages are data
rows counted from 1 (the header is not a row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.core.errors import UserError, unknown
from toolkit.data.base import DataSpec
from toolkit.data.splits import Source, encode_targets

MIN_ROWS = 2


def _read(path: Path, what: str):
    import pandas as pd

    if not path.exists():
        raise UserError(f"{what}: file not found")
    if not path.is_file():
        raise UserError(f"{what}: not a file")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"{what}: the file is empty (expected a header row and data rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what}: cannot parse as CSV: {first}") from exc


def _bad_cell(series, what: str) -> None:
    """Raise naming the column and first row whose value is not a finite number."""
    import pandas as pd

    numeric = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = ~np.isfinite(numeric.to_numpy())
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    raw = series.iloc[row]
    if pd.isna(raw):
        problem = "an empty (missing) value"
    elif np.isinf(numeric.iloc[row]):
        problem = f"an infinite value {str(raw)!r}"
    else:
        problem = f"a non-numeric value {str(raw)!r}"
    raise UserError(
        f"{what}: column {series.name!r} has {problem} at row {row + 1}; clean or drop it"
    )


def load_csv(spec: DataSpec, arg: str) -> Source:
    """Features must be numeric and finite; the target may be text, integers or floats."""
    import pandas as pd

    path = Path(arg).expanduser()
    what = f"csv {arg}"
    frame = _read(path, what)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if len(frame) < MIN_ROWS:
        rows = "only a header" if len(frame) == 0 else f"{len(frame)} data row"
        raise UserError(f"{what}: the file has {rows}; need at least {MIN_ROWS} data rows")
    if len(columns) < 2:
        raise UserError(
            f"{what}: needs at least one feature column and a target column; "
            f"found only {columns!r} (is the separator a comma?)"
        )

    # `target: a,b,c` (or `csv:PATH` with `target` naming several columns): multi-output.
    targets = [t.strip() for t in spec.target.split(",")] if spec.target else [columns[-1]]
    for target in targets:
        if target not in columns:
            raise UserError(f"{what}: {unknown('target column', target, columns)}")
    features = [c for c in columns if c not in targets]
    if not features:
        raise UserError(f"{what}: every column is a target; at least one feature is needed")
    for column in features:
        _bad_cell(frame[column], what)
    for target in targets:
        if frame[target].isna().any():
            row = int(np.flatnonzero(frame[target].isna().to_numpy())[0])
            raise UserError(
                f"{what}: target column {target!r} has an empty value at row {row + 1}; "
                f"fill or drop that row"
            )
    values = frame[targets[0]].to_numpy() if len(targets) == 1 else frame[targets].to_numpy()
    y, task, labels = encode_targets(values, spec.task, what)
    x = frame[features].apply(pd.to_numeric).to_numpy(dtype=np.float32)
    return Source(
        what=what,
        y=y,
        task=task,
        labels=labels,
        kind="tabular",
        input_shape=(len(features),),
        x=x,
        feature_names=features,
    )
