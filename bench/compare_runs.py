"""Compare two run folders' results (the speed work's regression check): every table under
timeseries/ plus elements.parquet and the dso/ and CLEARING files, numbers to ``--atol``
(default 1e-9), timing columns ignored.

``python bench/compare_runs.py RUN_A RUN_B [--atol 1e-9]``: prints the differences, exit 1
if there are any.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: columns that measure time, not results, or hold the per-run random bid pseudonyms
TIMING = {"build_time_s", "solve_time_s", "dso_time_s", "wall_time_s", "bid_id"}
#: files that differ between any two runs (per-run secrets, machine figures)
SKIP = {"summary.json", "versions.json", "summary.csv", "config.resolved.json", "KEYMAP.json",
        "bid_pseudonyms.json"}


def _strip_times(x):
    """A JSON value without its ``*_time_s`` entries."""
    if isinstance(x, dict):
        return {k: _strip_times(v) for k, v in x.items() if not k.endswith("_time_s")}
    if isinstance(x, list):
        return [_strip_times(v) for v in x]
    return x


def compare_tables(a: pd.DataFrame, b: pd.DataFrame, *, atol: float) -> list[str]:
    """Differences between two tables (same columns, rows in order)."""
    out = []
    if list(a.columns) != list(b.columns):
        return [f"columns differ: {list(a.columns)} vs {list(b.columns)}"]
    if len(a) != len(b):
        return [f"rows differ: {len(a)} vs {len(b)}"]
    for col in a.columns:
        if col in TIMING:
            continue
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) \
                and not pd.api.types.is_bool_dtype(x):
            xf, yf = x.to_numpy(float), y.to_numpy(float)
            same_nan = np.isnan(xf) == np.isnan(yf)
            ok = ~np.isnan(xf) & ~np.isnan(yf)
            inf_same = np.where(np.isinf(xf) | np.isinf(yf), xf == yf, True)
            d = np.abs(xf[ok & ~np.isinf(xf)] - yf[ok & ~np.isinf(xf)])
            worst = float(d.max(initial=0.0))
            if not same_nan.all() or not inf_same.all() or worst > atol:
                out.append(f"{col}: max abs diff {worst:g}, nan/inf pattern "
                           f"{'same' if same_nan.all() and inf_same.all() else 'differs'}")
        elif not (x.astype(str).to_numpy() == y.astype(str).to_numpy()).all():
            k = int(np.flatnonzero(x.astype(str).to_numpy() != y.astype(str).to_numpy())[0])
            out.append(f"{col}: differs, first at row {k}: {x.iloc[k]!r} vs {y.iloc[k]!r}")
    return out


def compare_runs(a: Path, b: Path, *, atol: float = 1e-9) -> dict[str, list[str]]:
    """{file: differences} for every results file of run ``a`` (missing files included)."""
    diffs: dict[str, list[str]] = {}
    files = sorted(p.relative_to(a) for p in a.rglob("*")
                   if p.is_file() and p.suffix in (".parquet", ".csv", ".json")
                   and p.name not in SKIP)
    for rel in files:
        pb = b / rel
        if not pb.exists():
            diffs[str(rel)] = ["missing"]
            continue
        if rel.suffix == ".json":
            if _strip_times(json.loads((a / rel).read_text())) != \
                    _strip_times(json.loads(pb.read_text())):
                diffs[str(rel)] = ["JSON differs (times ignored)"]
            continue
        read = pd.read_parquet if rel.suffix == ".parquet" else pd.read_csv
        d = compare_tables(read(a / rel), read(pb), atol=atol)
        if d:
            diffs[str(rel)] = d
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--atol", type=float, default=1e-9)
    args = ap.parse_args(argv)
    diffs = compare_runs(args.a, args.b, atol=args.atol)
    for f, ds in diffs.items():
        for d in ds:
            print(f"{f}: {d}")
    print("same" if not diffs else f"{len(diffs)} file(s) differ")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
