"""``traces.parquet`` — the file between ``astro_sim`` and ``distill`` (schema ``rmaat.traces/v1``).

Long format, one row per (time, variable, element):

=========  =======  =====================================================================
column     dtype    meaning
=========  =======  =====================================================================
t_s        float64  time in seconds
variable   string   state variable name as in the model equations (``x``, ``p_l``, ``rho``)
element    int64    index within the variable (neuron, synapse, or independent unit)
value      float64  the value, in ``unit``
unit       string   unit of ``value`` (``"1"`` for dimensionless, ``"uM"``, ``"mM"`` ...)
=========  =======  =====================================================================

Run metadata lives in the Parquet key-value metadata under ``rmaat.traces`` (JSON) and is
returned as ``df.attrs``. Required attrs: ``schema`` and ``model``; usual ones:
``sampling`` (``"continuous"`` or ``"cycle_boundaries"``), ``tau_cycle_s``, ``config``
(the simulation config), ``dt_s``, ``target``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from astro_rmaat.errors import DataError, show
from astro_rmaat.runs import atomic_path, sha256_file

SCHEMA = "rmaat.traces/v1"
META_KEY = b"rmaat.traces"
COLUMNS = ("t_s", "variable", "element", "value", "unit")


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"traces table lacks column(s) {missing}; expected columns {list(COLUMNS)}")
    for col, ok, expected in (("t_s", _is_real, "float64"), ("value", _is_real, "float64"),
                              ("element", pd.api.types.is_integer_dtype, "int64")):
        if not ok(df[col]):
            raise DataError(f"traces column {col!r} has dtype {df[col].dtype}; expected {expected} "
                            f"(see the {SCHEMA} table in astro_rmaat/traces.py)")
    out = pd.DataFrame({
        "t_s": df["t_s"].to_numpy(dtype=np.float64),
        "variable": _names(df["variable"]),
        "element": df["element"].to_numpy(dtype=np.int64),
        "value": df["value"].to_numpy(dtype=np.float64),
        "unit": _names(df["unit"]),
    })
    return out


def _names(col: pd.Series) -> np.ndarray:
    """``col`` as strings in an object array, the values of ``astype(str).to_numpy(dtype=object)``
    with one str object for each distinct value: a column of a few names (variable, unit) costs
    a pointer a row, where a str object for every row cost about 60 bytes."""
    codes, uniques = pd.factorize(col.astype(str), use_na_sentinel=False)
    return np.asarray(uniques, dtype=object)[codes]


def _is_real(col: pd.Series) -> bool:
    return (pd.api.types.is_float_dtype(col) or pd.api.types.is_integer_dtype(col)) \
        and not pd.api.types.is_bool_dtype(col)


def write_traces(df: pd.DataFrame, path: str | os.PathLike, attrs: dict[str, Any]) -> str:
    """Validate and write ``df`` atomically to ``path``; return the file's sha256.

    ``df`` is let go of once its canonical copy is made: a caller that hands over its only
    reference (``astro_sim.simulate`` does) has the frame freed before the Arrow table and the
    Parquet writer take their memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if "model" not in attrs:
        raise DataError("trace attrs must name the 'model' that produced them")
    table_df = _canonical(df)
    del df
    meta = {"schema": SCHEMA, **attrs}
    validate(table_df, where=str(path))
    # nthreads=1: the default starts a thread pool per call (~3 ms, more than the
    # conversion of a run's few thousand rows); the table is the same
    table = pa.Table.from_pandas(table_df, preserve_index=False, nthreads=1)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, sort_keys=True, default=_default).encode()
    table = table.replace_schema_metadata(schema_meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return sha256_file(path)


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def read_traces(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a traces file; its metadata is returned in ``df.attrs``."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise DataError(f"traces file {str(p)!r} " + ("is not a regular file; expected a Parquet file" if p.exists()
                                                     else "does not exist"))
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"traces file {str(p)!r} is not a readable Parquet file: {exc}") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DataError(f"traces file {str(p)!r} has no '{META_KEY.decode()}' metadata; "
                        f"expected a file written by astro_sim (schema {SCHEMA})")
    attrs = json.loads(raw)
    if attrs.get("schema") != SCHEMA:
        raise DataError(f"traces file {str(p)!r} has schema {attrs.get('schema')!r}; expected {SCHEMA!r}")
    df = _canonical(table.to_pandas())
    validate(df, where=str(p))
    df.attrs.update(attrs)
    return df


def validate(df: pd.DataFrame, where: str = "traces") -> None:
    """Non-empty, finite, and strictly increasing time within each (variable, element)."""
    if len(df) == 0:
        raise DataError(f"{where}: the trace table is empty")
    bad_t = ~np.isfinite(df["t_s"].to_numpy())
    bad_v = ~np.isfinite(df["value"].to_numpy())
    if bad_t.any() or bad_v.any():
        row = int(np.flatnonzero(bad_t | bad_v)[0])
        r = df.iloc[row]
        raise DataError(f"{where}: non-finite value at t_s={show(r.t_s)}, variable={r.variable!r}, "
                        f"element={show(r.element)}: value={show(r.value)}; expected finite numbers")
    for (var, el), grp in df.groupby(["variable", "element"], sort=False):
        t = grp["t_s"].to_numpy()
        if t.size > 1 and not np.all(np.diff(t) > 0):
            i = int(np.flatnonzero(np.diff(t) <= 0)[0])
            raise DataError(f"{where}: time is not increasing for variable {var!r} element {el} "
                            f"(t_s[{i}]={show(t[i])}, t_s[{i + 1}]={show(t[i + 1])})")


def select_curve(df: pd.DataFrame, variable: str, element: int | None = None,
                 reduce: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """One curve (t_s, value) of ``variable``: one ``element``, or the elements' mean/sum."""
    variables = sorted(df["variable"].unique())
    if variable not in variables:
        raise DataError(f"variable {variable!r} is not in the traces; available: {', '.join(variables)}")
    sub = df[df["variable"] == variable]
    if element is not None:
        sub = sub[sub["element"] == element]
        if sub.empty:
            elements = sorted(df.loc[df["variable"] == variable, "element"].unique().tolist())
            raise DataError(f"element {element} of {variable!r} is not in the traces; available: {elements}")
        return sub["t_s"].to_numpy(), sub["value"].to_numpy()
    if reduce not in ("mean", "sum"):
        raise DataError(f"reduce={reduce!r}: expected 'mean' or 'sum'")
    wide = sub.pivot_table(index="t_s", columns="element", values="value", aggfunc="first")
    if wide.isna().any().any():
        raise DataError(f"elements of {variable!r} are not sampled at the same times; pick one with element=")
    y = wide.mean(axis=1) if reduce == "mean" else wide.sum(axis=1)
    return wide.index.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64)

