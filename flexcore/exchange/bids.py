"""Balancing bids: the ``BIDS.csv`` contract shared by DSO and TSO.

Columns (header required, order free):

==================== ======== =====================================================
column               required meaning
==================== ======== =====================================================
``id``               yes      unique bid id (string)
``volume_mw``        yes      signed volume: > 0 upward (inject more / consume less)
``price_eur_per_mwh``yes      price of activated energy, EUR/MWh (>= 0 usually)
``bus``              DSO only pandapower bus index of the connection point; the TSO
                              ignores it (it never sees buses)
``min_mw``           no       minimum activated size (magnitude, MW); 0 = divisible
``indivisible``      no       true/false: all-or-nothing bid
==================== ======== =====================================================

This module imports neither pandapower nor mosaik: both sides use it.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flexcore.errors import FlexcosimError
from flexcore.exchange.limits import BoolArray, FloatArray, IntArray

REQUIRED_COLUMNS = ("id", "volume_mw", "price_eur_per_mwh")
OPTIONAL_COLUMNS = ("bus", "min_mw", "indivisible")


class BidError(FlexcosimError, ValueError):
    """A bid table is malformed; the message names the file, row and column."""


@dataclass(frozen=True)
class BidTable:
    """Column-oriented bid table (one entry per bid, same order everywhere)."""

    ids: tuple[str, ...]
    volume_mw: FloatArray
    price_eur_per_mwh: FloatArray
    # None (the default) means "all 0" / "all divisible"; always an array after __init__
    min_mw: FloatArray = field(default=None)  # type: ignore[arg-type]
    indivisible: BoolArray = field(default=None)  # type: ignore[arg-type]
    bus: IntArray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        object.__setattr__(self, "volume_mw", np.asarray(self.volume_mw, dtype=float).reshape(n))
        object.__setattr__(
            self, "price_eur_per_mwh", np.asarray(self.price_eur_per_mwh, dtype=float).reshape(n)
        )
        mins = np.zeros(n) if self.min_mw is None else np.asarray(self.min_mw, dtype=float)
        object.__setattr__(self, "min_mw", mins.reshape(n))
        ind = np.zeros(n, bool) if self.indivisible is None else np.asarray(self.indivisible, bool)
        object.__setattr__(self, "indivisible", ind.reshape(n))
        if self.bus is not None:
            object.__setattr__(self, "bus", np.asarray(self.bus, dtype=np.int64).reshape(n))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, source: str = "bids") -> None:
        if len(set(self.ids)) != len(self.ids):
            dup = sorted({i for i in self.ids if self.ids.count(i) > 1})
            raise BidError(f"{source}: duplicate bid id(s) {dup[:5]}")
        for name in ("volume_mw", "price_eur_per_mwh", "min_mw"):
            arr = getattr(self, name)
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise BidError(
                    f"{source}: column '{name}' is not finite for bid id(s) "
                    f"{[self.ids[k] for k in bad[:5]]}"
                )
        bad = np.flatnonzero(self.min_mw < 0)
        if bad.size:
            raise BidError(f"{source}: 'min_mw' must be >= 0 (bid {self.ids[bad[0]]})")
        bad = np.flatnonzero(self.min_mw > np.abs(self.volume_mw) + 1e-12)
        if bad.size:
            raise BidError(
                f"{source}: 'min_mw' exceeds |volume_mw| for bid {self.ids[bad[0]]}"
            )

    # ----------------------------------------------------------------- helpers
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lower_mw(self) -> FloatArray:
        """P_LB = min(0, P_M)."""
        out: FloatArray = np.minimum(0.0, self.volume_mw)
        return out

    @property
    def upper_mw(self) -> FloatArray:
        """P_UB = max(0, P_M)."""
        out: FloatArray = np.maximum(0.0, self.volume_mw)
        return out

    def subset(self, ids: Sequence[str]) -> BidTable:
        """The bids in the given order (raises naming missing ids)."""
        pos = {b: k for k, b in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise BidError(f"bid id(s) not in the bid table: {missing[:5]}")
        idx = np.array([pos[i] for i in ids], dtype=int)
        return BidTable(
            ids=tuple(ids),
            volume_mw=self.volume_mw[idx],
            price_eur_per_mwh=self.price_eur_per_mwh[idx],
            min_mw=self.min_mw[idx],
            indivisible=self.indivisible[idx],
            bus=None if self.bus is None else self.bus[idx],
        )

    def without_bus(self) -> BidTable:
        """What the TSO may see."""
        return BidTable(
            ids=self.ids,
            volume_mw=self.volume_mw,
            price_eur_per_mwh=self.price_eur_per_mwh,
            min_mw=self.min_mw,
            indivisible=self.indivisible,
        )


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def read_bids(path: str | Path, *, require_bus: bool = False) -> BidTable:
    """Read ``BIDS.csv``; every problem names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise BidError(f"bid file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if require_bus and "bus" not in header:
            missing.append("bus")
        if missing:
            raise BidError(f"{path}: missing column(s) {missing}; header is {header}")
        ids, vol, price, mins, ind, bus = [], [], [], [], [], []
        for lineno, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            ids.append(row["id"])
            if not row["id"]:
                raise BidError(f"{path}:{lineno}: empty 'id'")
            vol.append(_float(path, lineno, "volume_mw", row["volume_mw"]))
            price.append(_float(path, lineno, "price_eur_per_mwh", row["price_eur_per_mwh"]))
            mins.append(_float(path, lineno, "min_mw", row.get("min_mw") or "0"))
            flag = (row.get("indivisible") or "").lower()
            if flag not in _TRUE | _FALSE:
                raise BidError(f"{path}:{lineno}: 'indivisible' must be true/false, got {flag!r}")
            ind.append(flag in _TRUE)
            if "bus" in header:
                try:
                    bus.append(int(row["bus"]))
                except ValueError:
                    raise BidError(
                        f"{path}:{lineno}: 'bus' must be an integer bus index, got {row['bus']!r}"
                    ) from None
    table = BidTable(
        ids=tuple(ids),
        volume_mw=np.array(vol),
        price_eur_per_mwh=np.array(price),
        min_mw=np.array(mins),
        indivisible=np.array(ind, bool),
        bus=np.array(bus, dtype=np.int64) if "bus" in header else None,
    )
    table.validate(str(path))
    return table


def _float(path: Path, lineno: int, col: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BidError(f"{path}:{lineno}: column '{col}' is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise BidError(f"{path}:{lineno}: column '{col}' is not finite: {text!r}")
    return value


def write_bids(table: BidTable, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        cols = ["id"] + (["bus"] if table.bus is not None else [])
        cols += ["volume_mw", "price_eur_per_mwh", "min_mw", "indivisible"]
        w.writerow(cols)
        for k, bid in enumerate(table.ids):
            row = [bid] + ([int(table.bus[k])] if table.bus is not None else [])
            row += [
                repr(float(table.volume_mw[k])),
                repr(float(table.price_eur_per_mwh[k])),
                repr(float(table.min_mw[k])),
                "true" if table.indivisible[k] else "false",
            ]
            w.writerow(row)
    return path
