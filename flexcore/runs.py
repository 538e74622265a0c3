"""Run folders under ``results/``: one per run, never overwritten."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from flexcore.errors import FlexcosimError


class RunFolderError(FlexcosimError, FileExistsError):
    """An output folder that exists and is not empty (runs never overwrite each other)."""

PACKAGES = ("flexcosim", "numpy", "scipy", "pandas", "pandapower", "pyomo", "highspy", "mosaik",
            "mosaik-api-v3", "demandlib", "pvlib", "hplib", "simbench", "matplotlib")


def default_results_root() -> Path:
    return Path.cwd() / "results"


def new_run_dir(kind: str, *, root: str | Path | None = None, out: str | Path | None = None
                ) -> Path:
    """A fresh folder ``results/<UTC time>-<kind>`` (or ``out``, which must not exist yet)."""
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise RunFolderError(f"output folder {path} exists and is not empty; "
                                  "runs never overwrite each other")
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = Path(root) if root is not None else default_results_root()
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = root / (f"{stamp}-{kind}" if k == 0 else f"{stamp}-{kind}-{k}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RunFolderError(f"cannot create a fresh run folder under {root}")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_json(path: str | Path, data) -> Path:
    """Strict JSON (RFC 8259): NaN and infinities become ``null``, NumPy values plain."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=1, default=_default, allow_nan=False))
    return path


def _finite(data):
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    if hasattr(data, "tolist") and not isinstance(data, (str, bytes)):  # NumPy values
        return _finite(data.tolist())
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def drop_none(data):
    """``data`` without None values (dict entries and list items, recursively): TOML has
    no null."""
    if isinstance(data, dict):
        return {k: drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, (list, tuple)):
        return [drop_none(v) for v in data if v is not None]
    return data


def write_toml(path: str | Path, data: dict, *, header: str = "") -> Path:
    """Write ``data`` as TOML (tomli-w); None values are dropped (TOML has no null),
    NumPy scalars / arrays and paths converted; ``header`` becomes leading ``#`` lines."""
    import tomli_w

    def plain(x):
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, (int, float, str, bool)) or x is None:
            return x
        return _default(x)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    path.write_text(lines + tomli_w.dumps(drop_none(plain(data))))
    return path


def _default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """One BLAS thread unless the environment says otherwise; call before numpy is imported.

    The sensitivity engine does many small sparse solves. With OpenBLAS's default threads
    they slow down ~10x as soon as another busy process shares the cores (measured on the
    2-core machines: 23 ms -> 270 ms per Bergwald linearisation point), which is the normal
    case for a co-simulation with separate simulator processes. Child processes inherit it.
    """
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")
