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

Plausibility caps (both sides; a value beyond them is a unit or typing error, not a bid):
``|volume_mw| <= MAX_ABS_VOLUME_MW`` (1,000 MW), ``|price_eur_per_mwh| <=
MAX_ABS_PRICE_EUR_PER_MWH`` (1e6 EUR/MWh), at most ``MAX_BIDS`` (20,000) bids per table and
package, and a ``BIDS.csv`` of at most ``MAX_FILE_BYTES`` (64 MiB). The file is UTF-8 (a
byte-order mark, as spreadsheet programs write it, is accepted).

This module imports neither pandapower nor mosaik: both sides use it.
"""
from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flexcore.errors import FlexcosimError
from flexcore.exchange.limits import BoolArray, FloatArray, IntArray

REQUIRED_COLUMNS = ("id", "volume_mw", "price_eur_per_mwh")
OPTIONAL_COLUMNS = ("bus", "min_mw", "indivisible")

#: plausibility cap on a bid's volume (MW): an LV/MV flexibility bid is far below it
MAX_ABS_VOLUME_MW = 1_000.0
#: plausibility cap on a bid's price (EUR/MWh); beyond it the MILP's numerics break down
MAX_ABS_PRICE_EUR_PER_MWH = 1.0e6
#: bids per table and per sensitivity package (the package grows with rows x bids x points)
MAX_BIDS = 20_000
#: largest BIDS.csv read (bytes): ~MAX_BIDS rows of up to 3 kB
MAX_FILE_BYTES = 64 * 1024 * 1024


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
        if len(self.ids) > MAX_BIDS:
            raise BidError(f"{source}: {len(self.ids)} bids exceed the cap of {MAX_BIDS} bids "
                           "per table (flexcore.exchange.bids.MAX_BIDS)")
        counts = Counter(self.ids)
        if len(counts) != len(self.ids):
            dup = sorted(i for i, c in counts.items() if c > 1)
            raise BidError(f"{source}: duplicate bid id(s) {dup[:5]}")
        for name in ("volume_mw", "price_eur_per_mwh", "min_mw"):
            arr = getattr(self, name)
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise BidError(
                    f"{source}: column '{name}' is not finite for bid id(s) "
                    f"{[self.ids[k] for k in bad[:5]]}"
                )
        for name, cap, unit in (("volume_mw", MAX_ABS_VOLUME_MW, "MW"),
                                ("min_mw", MAX_ABS_VOLUME_MW, "MW"),
                                ("price_eur_per_mwh", MAX_ABS_PRICE_EUR_PER_MWH, "EUR/MWh")):
            arr = getattr(self, name)
            bad = np.flatnonzero(np.abs(arr) > cap)
            if bad.size:
                k = int(bad[0])
                raise BidError(f"{source}: bid {self.ids[k]!r}: |{name}| = {abs(arr[k]):.6g} "
                               f"exceeds the plausibility cap of {cap:g} {unit}")
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
        if tuple(ids) == self.ids:  # already in that order (a frozen table: itself)
            return self
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
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise BidError(f"{path}: {size} bytes exceed the cap of {MAX_FILE_BYTES} bytes for a "
                       f"bid file (at most {MAX_BIDS} bids; flexcore.exchange.bids.MAX_BIDS)")
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw_bytes[:exc.start].count(b"\n") + 1
        raise BidError(f"{path}:{line}: not UTF-8 text (byte 0x{raw_bytes[exc.start]:02x} at "
                       f"offset {exc.start}); save the file as UTF-8 CSV") from None
    return _parse_bids(path, text, require_bus=require_bus)


def _parse_bids(path: Path, text: str, *, require_bus: bool) -> BidTable:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise BidError(f"{path}:1: not a readable CSV header ({exc})") from None
    header = [h.strip() for h in (fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if require_bus and "bus" not in header:
        missing.append("bus")
    if missing:
        raise BidError(f"{path}: missing column(s) {missing}; header is {header[:10]}")
    unknown = [h for h in header if h and h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if unknown or repeated:
        what = f"unknown column(s) {unknown[:10]}" if unknown else f"repeated column(s) {repeated}"
        raise BidError(f"{path}:1: {what}; allowed: {list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
    ids: list[str] = []
    vol: list[float] = []
    price: list[float] = []
    mins: list[float] = []
    ind: list[bool] = []
    bus: list[int] = []
    first_line: dict[str, int] = {}
    try:
        for raw in reader:
            lineno = reader.line_num
            if len(ids) >= MAX_BIDS:
                raise BidError(f"{path}:{lineno}: more than {MAX_BIDS} bids, the cap per bid "
                               "file and package (flexcore.exchange.bids.MAX_BIDS)")
            row = {k.strip(): (v or "").strip() for k, v in raw.items()
                   if isinstance(k, str) and isinstance(v, str)}
            bid = row.get("id", "")
            if not bid:
                raise BidError(f"{path}:{lineno}: empty 'id'")
            if not bid.isprintable():
                raise BidError(f"{path}:{lineno}: 'id' {bid[:40]!r} contains control "
                               "characters")
            if bid in first_line:
                raise BidError(f"{path}:{lineno}: duplicate bid id {bid!r} (first on line "
                               f"{first_line[bid]})")
            first_line[bid] = lineno
            ids.append(bid)
            vol.append(_float(path, lineno, "volume_mw", row.get("volume_mw", ""),
                              cap=MAX_ABS_VOLUME_MW, unit="MW"))
            price.append(_float(path, lineno, "price_eur_per_mwh",
                                row.get("price_eur_per_mwh", ""),
                                cap=MAX_ABS_PRICE_EUR_PER_MWH, unit="EUR/MWh"))
            mins.append(_float(path, lineno, "min_mw", row.get("min_mw") or "0",
                               cap=MAX_ABS_VOLUME_MW, unit="MW"))
            flag = (row.get("indivisible") or "").lower()
            if flag not in _TRUE | _FALSE:
                raise BidError(f"{path}:{lineno}: 'indivisible' must be true/false, got "
                               f"{flag[:40]!r}")
            ind.append(flag in _TRUE)
            if "bus" in header:
                try:
                    bus.append(int(row.get("bus", "")))
                except ValueError:
                    raise BidError(f"{path}:{lineno}: 'bus' must be an integer bus index, got "
                                   f"{row.get('bus', '')[:40]!r}") from None
                if not -2**63 <= bus[-1] < 2**63:
                    raise BidError(f"{path}:{lineno}: 'bus' {bus[-1]} is not a bus index")
    except csv.Error as exc:
        raise BidError(f"{path}:{reader.line_num}: not a readable CSV row ({exc})") from None
    table = BidTable(
        ids=tuple(ids),
        volume_mw=np.array(vol, dtype=float),
        price_eur_per_mwh=np.array(price, dtype=float),
        min_mw=np.array(mins, dtype=float),
        indivisible=np.array(ind, bool),
        bus=np.array(bus, dtype=np.int64) if "bus" in header else None,
    )
    table.validate(str(path))
    return table


def _float(path: Path, lineno: int, col: str, text: str, *, cap: float, unit: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BidError(f"{path}:{lineno}: column '{col}' is not a number: {text[:40]!r}"
                       ) from None
    if not math.isfinite(value):
        raise BidError(f"{path}:{lineno}: column '{col}' is not finite: {text[:40]!r}")
    if abs(value) > cap:
        raise BidError(f"{path}:{lineno}: column '{col}' = {value:.6g} is outside the "
                       f"plausibility cap |{col}| <= {cap:g} {unit}")
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
