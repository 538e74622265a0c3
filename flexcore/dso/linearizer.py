"""DSO side: operating points, the sensitivity package, refinement and AC validation.

The :class:`Linearizer` holds the DSO's private grid model and the bids' connection buses.
What leaves it is a :class:`~flexcore.package.SensitivityPackage` (numbers and opaque keys)
and, for the DSO's own records, a :class:`KeyMap` (``KEYMAP.json``) from keys to buses and
branches, which is never sent to the TSO.
"""
from __future__ import annotations

from flexcore.errors import FlexcosimError

import copy
import hashlib
import json
import math
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandapower as pp

from flexcore.grid import ppinternals, sensitivity
from flexcore.exchange.bids import BidTable
from flexcore.exchange.limits import Limits
from flexcore.exchange.package import PointInfo, SensitivityPackage, screen

FLEX_SGEN_NAME = "flexcosim activation"
#: only loads' and sgens' p/q change between power flows of one Linearizer: pandapower may
#: reuse its internal model and re-read the bus injections (bus_pq); the internal-state
#: check in ppinternals guards this against the results on every linearisation
RECYCLE = {"trafo": False, "gen": False, "bus_pq": True}
#: runpp options of the DSO's and the grid simulator's power flows: without numba a fresh
#: power flow costs ~7 ms more on Bergwald, a recycled one the same, and no process pays
#: numba's ~6 s compilation at start-up
PF_OPTIONS = {"numba": False}
KEYMAP_FORMAT = "flexcosim-keymap"


class PointNotConverged(FlexcosimError, RuntimeError):
    """The AC power flow at an operating point did not converge."""


# --------------------------------------------------------------------------- key map
@dataclass(frozen=True)
class KeyMap:
    """Private map from the package's opaque keys to the DSO's grid (``KEYMAP.json``)."""

    columns: dict[str, int]  # bid id -> bus
    vm_pu: dict[str, int]  # row key -> bus
    loading_percent: dict[str, tuple[str, int]]  # row key -> (element, index)
    salt: str = ""

    @classmethod
    def create(cls, net, bids: BidTable, *, salt: str | None = None, layout=None) -> "KeyMap":
        """Keys are salted hashes, sorted, so neither names nor order reveal the topology."""
        salt = secrets.token_hex(8) if salt is None else str(salt)
        vm, branches = _row_layout(net) if layout is None else layout

        def key(prefix: str, text: str) -> str:
            return prefix + hashlib.sha256(f"{salt}|{text}".encode()).hexdigest()[:10]

        vm_keys = {key("v", f"bus:{b}"): int(b) for b in vm}
        ld_keys = {key("l", f"{e}:{i}"): (e, int(i)) for e, i in branches}
        return cls(columns={b: int(bus) for b, bus in zip(bids.ids, bids.bus)},
                   vm_pu=dict(sorted(vm_keys.items())),
                   loading_percent=dict(sorted(ld_keys.items())), salt=salt)

    def to_json(self) -> dict:
        return {"format": KEYMAP_FORMAT, "version": 1, "salt": self.salt,
                "columns": self.columns, "vm_pu": self.vm_pu,
                "loading_percent": {k: list(v) for k, v in self.loading_percent.items()}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "KeyMap":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"key map not found: {path}")
        data = json.loads(path.read_text())
        if data.get("format") != KEYMAP_FORMAT:
            raise ValueError(f"{path}: not a flexcosim key map")
        try:
            return cls(columns={k: int(v) for k, v in data["columns"].items()},
                       vm_pu={k: int(v) for k, v in data["vm_pu"].items()},
                       loading_percent={k: (str(v[0]), int(v[1]))
                                        for k, v in data["loading_percent"].items()},
                       salt=str(data.get("salt", "")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: malformed key map ({exc!r})") from None


def _row_layout(net):
    """Supplied in-service buses and branches, in the row order of :func:`sensitivity.compute`
    (taken from a base-case power flow, so that isolated parts are left out consistently)."""
    work = copy.deepcopy(net)
    work.sgen.drop(work.sgen.index[work.sgen.name == FLEX_SGEN_NAME], inplace=True)
    try:
        pp.runpp(work, **PF_OPTIONS)
    except pp.LoadflowNotConverged:
        raise PointNotConverged("the base-case AC power flow does not converge") from None
    _, _, branches = sensitivity.signed_results(work)
    buses = ppinternals.extract_state(work, check=False).bus_index
    return buses, list(branches)


# --------------------------------------------------------------------------- points
@dataclass(frozen=True)
class OperatingPoint:
    """One linearisation point, rows in key-map order, columns in bid order."""

    label: str
    activation_fraction: float | None
    p_flex_mw: np.ndarray
    vm_pu: np.ndarray
    loading_percent: np.ndarray
    vtdf: np.ndarray
    ltdf: np.ndarray
    time_s: float


@dataclass(frozen=True)
class LinearizationReport:
    package: SensitivityPackage
    points_ok: tuple[str, ...]
    points_failed: tuple[str, ...]
    screening: dict | None
    time_s: float
    points: tuple[OperatingPoint, ...] = ()

    def as_text(self) -> str:
        p = self.package
        lines = [f"operating points: {', '.join(self.points_ok)}"]
        if self.points_failed:
            lines.append(f"left out (AC power flow did not converge): "
                         f"{', '.join(self.points_failed)}")
        lines.append(f"columns (bids): {p.n}; rows: {len(p.vm_rows)} voltages, "
                     f"{len(p.loading_rows)} loadings")
        if self.screening:
            s = self.screening
            lines.append(f"screening kept {s['vm_rows_kept']}/{s['vm_rows_total']} voltage rows "
                         f"and {s['loading_rows_kept']}/{s['loading_rows_total']} loading rows")
        lines.append(f"time: {self.time_s:.2f} s")
        return "\n".join(lines)


class Linearizer:
    """The DSO's linearisation engine over a private copy of the grid model."""

    def __init__(self, net, bids: BidTable, *, keymap: KeyMap | None = None,
                 salt: str | None = None, limits: Limits | None = None):
        if bids.bus is None:
            raise ValueError("the DSO needs each bid's 'bus' column")
        missing = sorted(set(bids.bus.tolist()) - set(net.bus.index.tolist()))
        if missing:
            raise ValueError(f"bid bus(es) {missing[:5]} are not buses of the grid")
        self.net = copy.deepcopy(net)
        self.bids = bids
        self.limits = limits or Limits()
        layout = _row_layout(self.net)
        self.keymap = keymap or KeyMap.create(self.net, bids, salt=salt, layout=layout)
        self._check_keymap(layout)
        # one activation sgen per bid bus; bids on one bus add up
        self._bus_of_bid = bids.bus
        self._flex_buses = np.unique(bids.bus)
        self.net.sgen.drop(self.net.sgen.index[self.net.sgen.name == FLEX_SGEN_NAME], inplace=True)
        self._flex_sgen = np.asarray(pp.create_sgens(self.net, self._flex_buses, p_mw=0.0,
                                                     name=FLEX_SGEN_NAME))
        self._bid_to_flex = np.searchsorted(self._flex_buses, bids.bus)
        self._recycle_ok = False
        self._solved = False  # net's results belong to the current injections
        buses, branches = layout
        pos_bus = {int(b): k for k, b in enumerate(buses)}
        pos_br = {br: k for k, br in enumerate(branches)}
        self._vm_rows = np.array([pos_bus[b] for b in self.keymap.vm_pu.values()], dtype=int)
        self._ld_rows = np.array([pos_br[tuple(v)] for v in self.keymap.loading_percent.values()],
                                 dtype=int)

    def _check_keymap(self, layout) -> None:
        km = self.keymap
        if list(km.columns) != list(self.bids.ids):
            raise ValueError("the key map's columns do not match the bid ids (same bids, same "
                             "order, are needed for a refinement of the same package)")
        buses, branches = layout
        if set(km.vm_pu.values()) != set(int(b) for b in buses) or \
                set(km.loading_percent.values()) != set(branches):
            raise ValueError("the key map does not describe this grid's buses and branches")

    def set_bid_volumes(self, volume_mw, price_eur_per_mwh=None) -> None:
        """New volumes (and prices) for the same bids: operating points and screening use
        them from now on (the co-simulation's bids change every frame, their ids do not)."""
        b = self.bids
        self.bids = BidTable(ids=b.ids, volume_mw=volume_mw,
                             price_eur_per_mwh=b.price_eur_per_mwh if price_eur_per_mwh is None
                             else price_eur_per_mwh, bus=b.bus)

    # ----------------------------------------------------------- fixed injections
    def set_base(self, *, load_p_mw=None, load_q_mvar=None, sgen_p_mw=None) -> None:
        """Set the fixed (market-independent) injections, arrays in table order."""
        self._solved = False
        if load_p_mw is not None:
            self.net.load["p_mw"] = np.asarray(load_p_mw, float)
        if load_q_mvar is not None:
            self.net.load["q_mvar"] = np.asarray(load_q_mvar, float)
        if sgen_p_mw is not None:
            own = self.net.sgen.name != FLEX_SGEN_NAME
            self.net.sgen.loc[own, "p_mw"] = np.asarray(sgen_p_mw, float)

    def invalidate(self) -> None:
        """Forget that ``self.net`` holds the current power flow: call it after running
        power flows on ``self.net`` yourself (e.g. finite differences)."""
        self._solved = self._recycle_ok = False

    def _apply(self, p_flex_mw: np.ndarray) -> None:
        p_flex_mw = np.asarray(p_flex_mw, float)
        if p_flex_mw.shape != (len(self.bids),) or not np.isfinite(p_flex_mw).all():
            raise ValueError(f"activation must be {len(self.bids)} finite values")
        per_bus = np.bincount(self._bid_to_flex, weights=p_flex_mw,
                              minlength=len(self._flex_buses))
        if not np.array_equal(self.net.sgen.loc[self._flex_sgen, "p_mw"].to_numpy(), per_bus):
            self.net.sgen.loc[self._flex_sgen, "p_mw"] = per_bus
            self._solved = False

    def power_flow(self, p_flex_mw) -> tuple[np.ndarray, np.ndarray]:
        """AC result (vm_pu, signed loading_percent) in key-map row order."""
        self._apply(p_flex_mw)
        self._runpp("AC power flow did not converge")
        vm, lp, _ = sensitivity.signed_results(self.net)
        return vm[self._vm_rows], lp[self._ld_rows]

    def _runpp(self, message: str) -> None:
        """AC power flow of the current injections; skipped when the grid already holds it
        (validating a zero activation right after the zero point costs nothing)."""
        if self._solved:
            return
        try:
            pp.runpp(self.net, recycle=RECYCLE if self._recycle_ok else None, **PF_OPTIONS)
            self._recycle_ok = self._solved = True
        except pp.LoadflowNotConverged:
            self._recycle_ok = False  # rebuild the internal model next time
            raise PointNotConverged(message) from None

    def point(self, p_flex_mw, *, label: str, activation_fraction: float | None = None
              ) -> OperatingPoint:
        t0 = time.perf_counter()
        self._apply(p_flex_mw)
        self._runpp(f"AC power flow did not converge at point {label}")
        s = sensitivity.compute(self.net, self._bus_of_bid)
        return OperatingPoint(label, activation_fraction, np.asarray(p_flex_mw, float),
                              s.vm_pu[self._vm_rows], s.loading_percent[self._ld_rows],
                              s.vtdf[self._vm_rows], s.ltdf[self._ld_rows],
                              time.perf_counter() - t0)

    # --------------------------------------------------------------- package
    def linearize(self, fractions=(0.0, 0.5, 1.0), *, screen_rows: bool = False,
                  margin_vm_pu: float = 0.005, margin_loading_percent: float = 5.0
                  ) -> LinearizationReport:
        """Operating points ``P_fix + a * P_M`` for each fraction a; failed points left out."""
        t0 = time.perf_counter()
        points, failed = [], []
        for a in fractions:
            label = f"a={a:g}"
            try:
                points.append(self.point(a * self.bids.volume_mw, label=label,
                                         activation_fraction=float(a)))
            except PointNotConverged:
                failed.append(label)
        if not points:
            raise PointNotConverged(f"no operating point converged (tried {list(fractions)})")
        package, report = self.package(points, screen_rows=screen_rows, margin_vm_pu=margin_vm_pu,
                                       margin_loading_percent=margin_loading_percent)
        return LinearizationReport(package, tuple(p.label for p in points), tuple(failed), report,
                                   time.perf_counter() - t0, tuple(points))

    def package(self, points, *, screen_rows: bool = False, margin_vm_pu: float = 0.005,
                margin_loading_percent: float = 5.0) -> tuple[SensitivityPackage, dict | None]:
        """The package of ``points`` (e.g. a fresh zero point plus older ones) and the
        screening report (None without screening); screening uses the current bid volumes."""
        package = self._package(list(points))
        if not screen_rows:
            return package, None
        package, rep = screen(package, lower_mw=self.bids.lower_mw, upper_mw=self.bids.upper_mw,
                              margin_vm_pu=margin_vm_pu,
                              margin_loading_percent=margin_loading_percent)
        return package, rep.as_dict()

    def _package(self, points: list[OperatingPoint]) -> SensitivityPackage:
        return SensitivityPackage(
            columns=tuple(self.bids.ids),
            vm_rows=tuple(self.keymap.vm_pu), loading_rows=tuple(self.keymap.loading_percent),
            points=tuple(PointInfo(p.label, p.activation_fraction) for p in points),
            p_flex_mw=np.stack([p.p_flex_mw for p in points]),
            vm_pu=np.stack([p.vm_pu for p in points]),
            loading_percent=np.stack([p.loading_percent for p in points]),
            vtdf=np.stack([p.vtdf for p in points]),
            ltdf=np.stack([p.ltdf for p in points]),
            limits=self.limits,
        )

    def refine(self, package: SensitivityPackage, activation_mw, *, label: str | None = None
               ) -> SensitivityPackage:
        """The package plus an operating point at the cleared activation (same rows)."""
        activation_mw = _activation_vector(package, activation_mw)
        pt = self.point(activation_mw, label=label or f"refine {package.m - package_base_points(package) + 1}")
        vm_pos = {k: i for i, k in enumerate(self.keymap.vm_pu)}
        ld_pos = {k: i for i, k in enumerate(self.keymap.loading_percent)}
        try:
            vi = np.array([vm_pos[k] for k in package.vm_rows], dtype=int)
            li = np.array([ld_pos[k] for k in package.loading_rows], dtype=int)
        except KeyError as exc:
            raise ValueError(f"package row {exc.args[0]} is not in the key map") from None
        return package.with_point(pt.label, p_flex_mw=pt.p_flex_mw, vm_pu=pt.vm_pu[vi],
                                  loading_percent=pt.loading_percent[li], vtdf=pt.vtdf[vi],
                                  ltdf=pt.ltdf[li])

    # ------------------------------------------------------------ validation
    def validate(self, activation_mw, *, predicted_vm_pu: dict[str, float],
                 predicted_loading_percent: dict[str, float]) -> "ValidationReport":
        """AC power flow at the cleared activation, compared with the MILP's estimates."""
        try:
            vm, lp = self.power_flow(activation_mw)
        except PointNotConverged as exc:
            return ValidationReport(converged=False, message=str(exc))
        vm_keys, ld_keys = list(self.keymap.vm_pu), list(self.keymap.loading_percent)
        vpos = {k: i for i, k in enumerate(vm_keys)}
        lpos = {k: i for i, k in enumerate(ld_keys)}
        unknown = [k for k in list(predicted_vm_pu) + list(predicted_loading_percent)
                   if k not in vpos and k not in lpos]
        if unknown:
            raise ValueError(f"clearing names row key(s) unknown to the key map: {unknown[:5]}")
        pv_keys = [k for k in predicted_vm_pu]
        pl_keys = [k for k in predicted_loading_percent]
        ev = np.array([predicted_vm_pu[k] - vm[vpos[k]] for k in pv_keys])
        el = np.array([abs(predicted_loading_percent[k]) - abs(lp[lpos[k]]) for k in pl_keys])
        lim = self.limits
        viol = []
        for k, x in zip(vm_keys, vm):
            if x < lim.vm_min_pu - 1e-9 or x > lim.vm_max_pu + 1e-9:
                limit = lim.vm_min_pu if x < lim.vm_min_pu else lim.vm_max_pu
                viol.append({"kind": "vm_pu", "key": k, "value": float(x), "limit": limit,
                             "amount": float(abs(x - limit))})
        for k, x in zip(ld_keys, lp):
            if x > lim.loading_max_percent + 1e-9 or x < lim.loading_min_percent - 1e-9:
                limit = lim.loading_max_percent if x > 0 else lim.loading_min_percent
                viol.append({"kind": "loading_percent", "key": k, "value": float(x),
                             "limit": limit, "amount": float(abs(x - limit))})
        viol.sort(key=lambda d: -d["amount"] / (100.0 if d["kind"] == "loading_percent" else 0.05))
        return ValidationReport(
            converged=True,
            vm_mae_pu=_mae(ev), vm_rmse_pu=_rmse(ev), vm_max_abs_pu=_maxabs(ev),
            loading_mae_percent=_mae(el), loading_rmse_percent=_rmse(el),
            loading_max_abs_percent=_maxabs(el),
            n_vm_rows=len(ev), n_loading_rows=len(el),
            violations=viol,
            max_loading_percent=float(np.abs(lp).max()) if len(lp) else 0.0,
            vm_min_pu=float(vm.min()), vm_max_pu=float(vm.max()),
            vm_errors={k: float(e) for k, e in zip(pv_keys, ev)},
            loading_errors={k: float(e) for k, e in zip(pl_keys, el)},
            ac_vm_pu={k: float(vm[vpos[k]]) for k in pv_keys},
            ac_loading_percent={k: float(lp[lpos[k]]) for k in pl_keys},
        )


def package_base_points(package: SensitivityPackage) -> int:
    return sum(1 for p in package.points if not p.label.startswith("refine"))


def _activation_vector(package: SensitivityPackage, activation_mw) -> np.ndarray:
    if isinstance(activation_mw, dict):
        missing = [c for c in package.columns if c not in activation_mw]
        if missing:
            raise ValueError(f"activation lacks bid(s) {missing[:5]}")
        return np.array([float(activation_mw[c]) for c in package.columns])
    return np.asarray(activation_mw, float)


def _mae(e):
    return float(np.mean(np.abs(e))) if len(e) else 0.0


def _rmse(e):
    return float(np.sqrt(np.mean(e ** 2))) if len(e) else 0.0


def _maxabs(e):
    return float(np.max(np.abs(e))) if len(e) else 0.0


@dataclass
class ValidationReport:
    """MILP estimate vs AC power flow (loadings compared as magnitudes, METHOD.md)."""

    converged: bool
    message: str = ""
    vm_mae_pu: float = math.nan
    vm_rmse_pu: float = math.nan
    vm_max_abs_pu: float = math.nan
    loading_mae_percent: float = math.nan
    loading_rmse_percent: float = math.nan
    loading_max_abs_percent: float = math.nan
    n_vm_rows: int = 0
    n_loading_rows: int = 0
    violations: list = field(default_factory=list)
    max_loading_percent: float = math.nan
    vm_min_pu: float = math.nan
    vm_max_pu: float = math.nan
    vm_errors: dict = field(default_factory=dict)
    loading_errors: dict = field(default_factory=dict)
    ac_vm_pu: dict = field(default_factory=dict)
    ac_loading_percent: dict = field(default_factory=dict)

    @property
    def safe(self) -> bool:
        return self.converged and not self.violations

    @property
    def max_violation(self) -> dict | None:
        return self.violations[0] if self.violations else None

    def to_json(self) -> dict:
        d = asdict(self)
        d["safe"] = self.safe
        d["max_violation"] = self.max_violation
        return d

    def as_text(self) -> str:
        if not self.converged:
            return f"AC power flow did not converge: {self.message}"
        mv = self.max_violation
        return (f"voltages: MAE {self.vm_mae_pu:.2e} p.u., RMSE {self.vm_rmse_pu:.2e} p.u. "
                f"({self.n_vm_rows} rows)\n"
                f"loadings: MAE {self.loading_mae_percent:.2e} %, RMSE "
                f"{self.loading_rmse_percent:.2e} % ({self.n_loading_rows} rows)\n"
                f"AC limits: " + ("all kept" if mv is None else
                                  f"{len(self.violations)} violated, worst {mv['kind']} "
                                  f"{mv['key']} = {mv['value']:.4f} (limit {mv['limit']})"))
