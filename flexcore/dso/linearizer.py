"""The DSO's linearisation engine: operating points, the sensitivity package, refinement
and the AC check of a clearing.

The :class:`Linearizer` holds the DSO's private grid model and the bids' connection buses.
What leaves it is a :class:`~flexcore.exchange.package.SensitivityPackage` (numbers and
opaque keys) and, for the DSO's own records, a :class:`~flexcore.dso.keymap.KeyMap`
(``KEYMAP.json``) from keys to buses and branches, which is never sent to the TSO. Its
power flows run in one :class:`~flexcore.grid.powerflow.ArrayPowerFlow` on arrays, with the
fast engine by default (``engine="pandapower"``: recycled ``pp.runpp``, the reference).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandapower as pp

from flexcore.dso.keymap import KEYMAP_FORMAT, KeyMap, KeyMapError
from flexcore.dso.validation import ValidationReport
from flexcore.errors import FlexcosimError
from flexcore.exchange.bids import BidError, BidTable
from flexcore.exchange.clearing import ClearingResult
from flexcore.exchange.limits import Limits
from flexcore.exchange.package import (
    PointInfo,
    ScreeningReport,
    SensitivityPackage,
    point_buffer,
    screen_masks,
)
from flexcore.grid import ppinternals, sensitivity
from flexcore.grid.powerflow import DEFAULT_ENGINE, ArrayPowerFlow, run_fresh

__all__ = ["FLEX_SGEN_NAME", "KEYMAP_FORMAT", "KeyMap", "KeyMapError", "LinearizationReport",
           "Linearizer", "OperatingPoint", "PointNotConverged", "ValidationReport"]

FLEX_SGEN_NAME = "flexcosim activation"
#: an activation: MW per bid in column order, ``{bid id: MW}``, or a clearing's activation
Activation = np.ndarray | Mapping[str, float] | ClearingResult


class PointNotConverged(FlexcosimError, RuntimeError):
    """The AC power flow at an operating point did not converge."""


#: refuse a linearisation whose sensitivities need more than this per operating point
#: (float64 VTDF + LTDF: rows x bids x 8 bytes; Bergwald with 20,000 bids: 0.16 GB)
MAX_POINT_BYTES = 1 << 30


def feeding_capacity_mva(net) -> float | None:
    """Sum of the ratings of the in-service transformers (two- and three-winding, highest
    winding): no activation can exceed what they carry. None for a grid without one."""
    total = float(net.trafo.sn_mva[net.trafo.in_service].sum()) if len(net.trafo) else 0.0
    if "trafo3w" in net and len(net.trafo3w):
        total += float(net.trafo3w.sn_hv_mva[net.trafo3w.in_service].sum())
    return total if total > 0 else None


def check_bid_plausibility(net, bids: BidTable, *, n_rows: int | None = None) -> None:
    """A bid larger than the transformers feeding the grid cannot be delivered (its AC power
    flow would not converge): name it. Also refuse, naming the estimate, a package whose
    sensitivities alone would need more than :data:`MAX_POINT_BYTES` per point."""
    _check_volumes(bids, feeding_capacity_mva(net))
    if n_rows is not None:
        need = 8 * n_rows * len(bids)
        if need > MAX_POINT_BYTES:
            raise BidError(f"{len(bids)} bids x {n_rows} grid rows need {need / 1e9:.2f} GB of "
                           f"sensitivities per operating point, above the cap of "
                           f"{MAX_POINT_BYTES / 1e9:.2f} GB (flexcore.dso.linearizer."
                           "MAX_POINT_BYTES): split the bids into several packages")


def _check_volumes(bids: BidTable, cap: float | None) -> None:
    """BidError naming the first bid whose |volume| exceeds ``cap`` (MVA; None: no check)."""
    if cap is not None:
        big = np.flatnonzero(np.abs(bids.volume_mw) > cap)
        if big.size:
            k = int(big[0])
            where = "" if bids.bus is None else f" at bus {int(bids.bus[k])}"
            raise BidError(f"bid {bids.ids[k]!r}{where}: |volume_mw| = "
                           f"{abs(bids.volume_mw[k]):.6g} MW exceeds the {cap:.6g} MVA of the "
                           "transformers feeding the grid")


def _row_layout(net) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Supplied in-service buses and branches, in the row order of :func:`sensitivity.compute`
    (taken from a base-case power flow, so that isolated parts are left out consistently)."""
    work = copy.deepcopy(net)
    work.sgen.drop(work.sgen.index[work.sgen.name == FLEX_SGEN_NAME], inplace=True)
    if not run_fresh(work):
        raise PointNotConverged("the base-case AC power flow does not converge")
    _, _, branches = sensitivity.signed_results(work)
    buses = ppinternals.extract_state(work, check=False).bus_index
    return buses, [(str(e), int(i)) for e, i in branches]


def _stack_rows(mats: list[np.ndarray], rows: np.ndarray | None, spare: int = 0,
                bid_column: np.ndarray | None = None) -> np.ndarray:
    """``np.stack([m[rows][:, bid_column] for m in mats])`` (all rows for None; no column
    gather without ``bid_column``), gathered straight into the result, with room for
    ``spare`` more points (:func:`point_buffer`)."""
    n_rows = mats[0].shape[0] if rows is None else len(rows)
    n_cols = mats[0].shape[1] if bid_column is None else len(bid_column)
    out = point_buffer(len(mats), (n_rows, n_cols), spare=spare)
    for i, m in enumerate(mats):
        _expand(m, bid_column, rows, out=out[i])
    return out


# --------------------------------------------------------------------------- points
@dataclass(frozen=True)
class OperatingPoint:
    """One linearisation point, rows in key-map order, columns in bid order.

    ``bid_column`` None: ``vtdf_cols``/``ltdf_cols`` have one column per bid. Else they
    have one column per distinct bid bus (bids on one bus share their sensitivities) and
    bid ``j``'s column is ``bid_column[j]``: the per-bid matrices (:attr:`vtdf`,
    :attr:`ltdf`) are the gather ``vtdf_cols[:, bid_column]``, made only when read (the
    package stacks its kept rows straight from the compact ones, screening works on them)."""

    label: str
    activation_fraction: float | None
    p_flex_mw: np.ndarray
    vm_pu: np.ndarray
    loading_percent: np.ndarray
    vtdf_cols: np.ndarray
    ltdf_cols: np.ndarray
    time_s: float
    bid_column: np.ndarray | None = None

    @cached_property
    def vtdf(self) -> np.ndarray:
        """VTDF (rows, bids), p.u. per MW."""
        return _expand(self.vtdf_cols, self.bid_column)

    @cached_property
    def ltdf(self) -> np.ndarray:
        """LTDF (rows, bids), % per MW."""
        return _expand(self.ltdf_cols, self.bid_column)


def _expand(mat: np.ndarray, bid_column: np.ndarray | None,
            rows: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """``mat[rows][:, bid_column]`` (all rows for None; ``mat[rows]`` without
    ``bid_column``), into ``out`` when given."""
    if rows is not None:
        mat = np.take(mat, rows, axis=0, mode="clip")  # rows are in range
    if bid_column is None:
        if out is None:
            return mat
        out[...] = mat
        return out
    return np.take(mat, bid_column, axis=1, out=out, mode="clip")


@dataclass(frozen=True)
class LinearizationReport:
    package: SensitivityPackage
    points_ok: tuple[str, ...]
    points_failed: tuple[str, ...]
    screening: dict | None
    time_s: float
    points: tuple[OperatingPoint, ...] = ()
    #: ``(bid id, bus)`` of bids on buses cut off from every source (an island)
    undeliverable: tuple[tuple[str, int], ...] = ()

    def as_text(self) -> str:
        p = self.package
        lines = [f"operating points: {', '.join(self.points_ok)}"]
        if self.undeliverable:
            lines.append(f"undeliverable (bus isolated from the supply, column fixed to 0): "
                         f"{len(self.undeliverable)} bid(s) "
                         + ", ".join(f"{b} (bus {bus})" for b, bus in self.undeliverable[:20])
                         + (" ..." if len(self.undeliverable) > 20 else ""))
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


@dataclass(frozen=True)
class RowPositions:
    """Positions of the key map's rows (key-map order) in the grid's full result vectors
    (the row order of :func:`flexcore.grid.sensitivity.compute` / ``signed_results``)."""

    vm: np.ndarray
    loading: np.ndarray


class Linearizer:
    """The DSO's linearisation engine over a private copy of the grid model.

    ``engine``: the power-flow engine (:data:`flexcore.grid.powerflow.ENGINES`); the
    injections live in arrays (:attr:`pf`), and :attr:`net` writes them into the grid
    model's tables and runs pandapower there when read, so that code reading ``net.res_*``
    sees the current state (the hot path never reads it)."""

    def __init__(self, net, bids: BidTable, *, keymap: KeyMap | None = None,
                 salt: str | None = None, limits: Limits | None = None,
                 engine: str = DEFAULT_ENGINE):
        if bids.bus is None:
            raise BidError("the DSO needs each bid's 'bus' column")
        missing = sorted(set(bids.bus.tolist()) - set(net.bus.index.tolist()))
        if missing:
            first = [b for b, bus in zip(bids.ids, bids.bus.tolist()) if bus in set(missing)]
            raise BidError(f"bid bus(es) {missing[:5]} are not buses of the grid (bid(s) "
                           f"{first[:5]})")
        check_bid_plausibility(net, bids)
        self._net = copy.deepcopy(net)
        #: :func:`feeding_capacity_mva` of the model (False: not computed yet)
        self._capacity_mva: float | None | bool = False
        self.bids = bids
        self.limits = limits or Limits()
        buses, branches = _row_layout(self._net)
        check_bid_plausibility(net, bids, n_rows=len(buses) + len(branches))
        self.keymap = keymap or KeyMap.create(bids, buses=buses, branches=branches, salt=salt)
        self.keymap.check(bids, buses=buses, branches=branches)
        self._supplied_bid = np.isin(bids.bus, buses)
        if not self._supplied_bid.all():
            bids = replace(bids, volume_mw=np.where(self._supplied_bid, bids.volume_mw, 0.0),
                           min_mw=np.where(self._supplied_bid, bids.min_mw, 0.0))
            self.bids = bids
        # one activation sgen per bid bus; bids on one bus add up
        self._bus_of_bid = bids.bus
        self._flex_buses = np.unique(bids.bus)
        work = self._net
        work.sgen.drop(work.sgen.index[work.sgen.name == FLEX_SGEN_NAME], inplace=True)
        self._flex_sgen = np.asarray(pp.create_sgens(work, self._flex_buses, p_mw=0.0,
                                                     name=FLEX_SGEN_NAME))
        self._bid_to_flex = np.searchsorted(self._flex_buses, bids.bus)
        # every load and sgen is tracked as arrays in table order
        self.pf = ArrayPowerFlow(work, engine=engine)
        self._flex_pos = work.sgen.index.get_indexer(self._flex_sgen)
        self._own_sgen_pos = np.flatnonzero(work.sgen.name.to_numpy() != FLEX_SGEN_NAME)
        # bids on buses cut off from every source (an island behind an open switch or an
        # out-of-service line) cannot be delivered: their columns are 0 at every point and
        # their volume is fixed to 0 (``undeliverable_mask``); the TSO must not clear them
        self.supplied_buses = np.asarray(buses, dtype=np.int64)
        self.undeliverable_mask = ~self._supplied_bid
        self.undeliverable = tuple((str(b), int(bus)) for b, bus, off in
                                   zip(bids.ids, bids.bus, self.undeliverable_mask) if off)
        self._flex_supplied = np.isin(self._flex_buses, self.supplied_buses)
        col_of_flex = np.full(len(self._flex_buses), int(self._flex_supplied.sum()))
        col_of_flex[self._flex_supplied] = np.arange(int(self._flex_supplied.sum()))
        self._bid_column = col_of_flex[self._bid_to_flex]
        self.isolated_buses = tuple(int(b) for b in np.setdiff1d(
            net.bus.index[net.bus.in_service.to_numpy(bool)].to_numpy(np.int64),
            self.supplied_buses))
        pos_bus = {int(b): k for k, b in enumerate(buses)}
        pos_br = {br: k for k, br in enumerate(branches)}
        self.row_positions = RowPositions(
            vm=np.array([pos_bus[b] for b in self.keymap.vm_pu.values()], dtype=int),
            loading=np.array([pos_br[tuple(v)] for v in self.keymap.loading_percent.values()],
                             dtype=int))
        self._rows_memo: tuple | None = None  # _package_rows
        self._vm_keys = tuple(self.keymap.vm_pu)
        self._ld_keys = tuple(self.keymap.loading_percent)

    @property
    def net(self):
        """The grid model with the current injections and their pandapower power flow."""
        return self.pf.sync_net()

    def net_tables(self):
        """The grid model with the current injections written into its tables, without a
        power flow (its ``res_*`` tables may be stale): for readers of the input tables
        only, e.g. the privacy audit."""
        return self.pf.sync_net(run=False)

    @property
    def engine(self) -> str:
        """The power-flow engine in use (``pf.fallback_reason`` says why, if not the one
        asked for)."""
        return self.pf.engine

    def deliverable_bids(self, bids: BidTable) -> BidTable:
        """``bids`` (same ids) with the volume of undeliverable bids set to 0: what the
        DSO lets the TSO clear."""
        if not self.undeliverable:
            return bids
        off = {b for b, _ in self.undeliverable}
        vol = np.where([c in off for c in bids.ids], 0.0, bids.volume_mw)
        return replace(bids, volume_mw=vol, min_mw=np.where(vol == 0.0, 0.0, bids.min_mw))

    def set_bid_volumes(self, volume_mw, price_eur_per_mwh=None) -> None:
        """New volumes (and prices) for the same bids: operating points and screening use
        them from now on (the co-simulation's bids change every frame, their ids do not);
        undeliverable bids keep volume 0."""
        b = self.bids
        volume_mw = np.where(self.undeliverable_mask, 0.0, np.asarray(volume_mw, float))
        bids = BidTable(ids=b.ids, volume_mw=volume_mw,
                        price_eur_per_mwh=b.price_eur_per_mwh if price_eur_per_mwh is None
                        else price_eur_per_mwh, bus=b.bus)
        if self._capacity_mva is False:  # computed once per grid model (invalidate())
            self._capacity_mva = feeding_capacity_mva(self._net)
        _check_volumes(bids, self._capacity_mva)
        self.bids = bids

    # ----------------------------------------------------------- injections
    def set_base(self, *, load_p_mw=None, load_q_mvar=None, sgen_p_mw=None) -> None:
        """Set the fixed (market-independent) injections, arrays in table order (sgens:
        the grid's own, without the activation sgens)."""
        pf = self.pf
        if load_p_mw is not None:
            pf.load_p_mw[:] = np.asarray(load_p_mw, float)
        if load_q_mvar is not None:
            pf.load_q_mvar[:] = np.asarray(load_q_mvar, float)
        if sgen_p_mw is not None:
            pf.sgen_p_mw[self._own_sgen_pos] = np.asarray(sgen_p_mw, float)
        pf.changed()

    def set_slack_vm(self, vm_pu: float) -> None:
        """New voltage set point of the grid's ext_grid(s) (e.g. the measured voltage of an
        LV area's MV bus): an update of the power-flow engine, no rebuild."""
        self.pf.set_slack_vm(vm_pu)

    @property
    def slack_vm_pu(self) -> float:
        """The voltage set point of the first in-service ext_grid."""
        eg = self.pf.net.ext_grid
        on = eg.in_service.to_numpy(bool)
        return float(eg.vm_pu.to_numpy(float)[on][0])

    def invalidate(self) -> None:
        """Forget that ``self.net`` holds the current power flow: call it after running
        power flows on ``self.net`` yourself (e.g. finite differences) or changing anything
        but the injections (the engine is rebuilt from ``self.net``)."""
        self._capacity_mva = False
        self.pf.rebuild()

    def activation_vector(self, activation: Activation) -> np.ndarray:
        """MW per bid in bid order from an array, a ``{bid id: MW}`` dict (every bid) or a
        clearing (bids it does not activate are 0)."""
        if isinstance(activation, ClearingResult):
            return activation.activation_vector(self.bids.ids)
        if isinstance(activation, Mapping):
            missing = [c for c in self.bids.ids if c not in activation]
            if missing:
                raise ValueError(f"activation lacks bid(s) {missing[:5]}")
            return np.array([float(activation[c]) for c in self.bids.ids])
        return np.asarray(activation, float)

    def apply(self, activation: Activation) -> np.ndarray:
        """Write the activation into the grid model's activation sgens (no power flow);
        returns it as a vector in bid order."""
        x = self.activation_vector(activation)
        if x.shape != (len(self.bids),) or not np.isfinite(x).all():
            raise ValueError(f"activation must be {len(self.bids)} finite values")
        per_bus = np.bincount(self._bid_to_flex, weights=x, minlength=len(self._flex_buses))
        if not np.array_equal(self.pf.sgen_p_mw[self._flex_pos], per_bus):
            self.pf.sgen_p_mw[self._flex_pos] = per_bus
            self.pf.changed()
        return x

    def _solve(self, activation: Activation, message: str) -> np.ndarray:
        x = self.apply(activation)
        if not self.pf.run():
            raise PointNotConverged(message)
        return x

    def power_flow(self, activation: Activation) -> tuple[np.ndarray, np.ndarray]:
        """AC result (vm_pu, signed loading_percent) in key-map row order; raises
        :class:`PointNotConverged`. Free when the grid already holds it."""
        self._solve(activation, "AC power flow did not converge")
        vm, lp = self.pf.results()
        return vm[self.row_positions.vm], lp[self.row_positions.loading]

    def point(self, activation: Activation, *, label: str,
              activation_fraction: float | None = None) -> OperatingPoint:
        t0 = time.perf_counter()
        x = self._solve(activation, f"AC power flow did not converge at point {label}")
        vr, lr = self.row_positions.vm, self.row_positions.loading
        # one column per supplied bid bus, spread to the bids (undeliverable bids: 0) by one
        # gather per matrix
        s = self.pf.sensitivities(self._flex_buses[self._flex_supplied])
        # one column per supplied bid bus (kept compact: OperatingPoint.vtdf spreads them
        # to the bids); undeliverable bids point at an extra column of zeros
        vtdf, ltdf = s.vtdf[vr], s.ltdf[lr]
        if self.undeliverable:
            vtdf = np.hstack([vtdf, np.zeros((len(vr), 1))])
            ltdf = np.hstack([ltdf, np.zeros((len(lr), 1))])
        return OperatingPoint(label, activation_fraction, x, s.vm_pu[vr],
                              s.loading_percent[lr], vtdf, ltdf, time.perf_counter() - t0,
                              bid_column=self._bid_column)

    # --------------------------------------------------------------- package
    def linearize(self, fractions=(0.0, 0.5, 1.0), *, screen_rows: bool = False,
                  margin_vm_pu: float = 0.005, margin_loading_percent: float = 5.0,
                  spare_points: int = 0) -> LinearizationReport:
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
                                       margin_loading_percent=margin_loading_percent,
                                       spare_points=spare_points)
        return LinearizationReport(package, tuple(p.label for p in points), tuple(failed), report,
                                   time.perf_counter() - t0, tuple(points), self.undeliverable)

    def package(self, points, *, screen_rows: bool = False, margin_vm_pu: float = 0.005,
                margin_loading_percent: float = 5.0, spare_points: int = 0
                ) -> tuple[SensitivityPackage, dict | None]:
        """The package of ``points`` (e.g. a fresh zero point plus older ones) and the
        screening report (None without screening); screening uses the current bid volumes.
        ``spare_points``: room for that many refinement points (:meth:`refine` then
        writes a point instead of copying the package's matrices)."""
        points = list(points)
        p_flex = np.stack([p.p_flex_mw for p in points])
        vm = np.stack([p.vm_pu for p in points])
        ld = np.stack([p.loading_percent for p in points])
        vi = li = None
        screening = None
        # the points' own matrices: compact (one column per bid bus) when they share the
        # column map (points of this linearizer), else per bid
        col = points[0].bid_column
        if col is not None and all(p.bid_column is col or (
                p.bid_column is not None and np.array_equal(p.bid_column, col))
                for p in points[1:]):
            vmats, lmats = [p.vtdf_cols for p in points], [p.ltdf_cols for p in points]
        else:
            col = None
            vmats, lmats = [p.vtdf for p in points], [p.ltdf for p in points]
        if screen_rows:
            # the rows screen() keeps, from the points' own matrices: only those are stacked
            vm_keep, ld_keep = screen_masks(
                p_flex, vm, ld, vmats, lmats,
                self.limits, lower_mw=self.bids.lower_mw, upper_mw=self.bids.upper_mw,
                margin_vm_pu=margin_vm_pu, margin_loading_percent=margin_loading_percent,
                bid_column=col)
            screening = ScreeningReport(
                vm_rows_total=len(self._vm_keys), vm_rows_kept=int(vm_keep.sum()),
                loading_rows_total=len(self._ld_keys), loading_rows_kept=int(ld_keep.sum()),
                margin_vm_pu=margin_vm_pu, margin_loading_percent=margin_loading_percent)
            vi, li = np.flatnonzero(vm_keep), np.flatnonzero(ld_keep)
        vm_keys, ld_keys = self._vm_keys, self._ld_keys
        package = SensitivityPackage(
            columns=tuple(self.bids.ids),
            vm_rows=vm_keys if vi is None else tuple(vm_keys[k] for k in vi.tolist()),
            loading_rows=ld_keys if li is None else tuple(ld_keys[k] for k in li.tolist()),
            points=tuple(PointInfo(p.label, p.activation_fraction) for p in points),
            p_flex_mw=p_flex,
            vm_pu=vm if vi is None else vm[:, vi],
            loading_percent=ld if li is None else ld[:, li],
            vtdf=_stack_rows(vmats, vi, spare_points, col),
            ltdf=_stack_rows(lmats, li, spare_points, col),
            limits=self.limits, undeliverable=tuple(b for b, _ in self.undeliverable),
            screening=None if screening is None else screening.as_dict(),
        )
        return package, None if screening is None else screening.as_dict()

    def own_sgen_p_mw(self) -> np.ndarray:
        """The grid's own sgens' powers (not the activation sgens), in table order (a
        copy)."""
        return self.pf.sgen_p_mw[self._own_sgen_pos]

    def package_rows(self, package: SensitivityPackage) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``package``'s rows in :meth:`power_flow`'s arrays (key-map order)."""
        return self._package_rows(package)

    def _package_rows(self, package: SensitivityPackage) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``package``'s rows among the key map's rows (the last answer is
        kept: a frame's packages share their row tuples)."""
        last = self._rows_memo
        if last is not None and last[0] is package.vm_rows and last[1] is package.loading_rows:
            return last[2], last[3]
        out = self._find_package_rows(package)
        self._rows_memo = (package.vm_rows, package.loading_rows, *out)
        return out

    def _find_package_rows(self, package: SensitivityPackage
                           ) -> tuple[np.ndarray, np.ndarray]:
        vm_pos = {k: i for i, k in enumerate(self._vm_keys)}
        ld_pos = {k: i for i, k in enumerate(self._ld_keys)}
        try:
            return (np.array([vm_pos[k] for k in package.vm_rows], dtype=int),
                    np.array([ld_pos[k] for k in package.loading_rows], dtype=int))
        except KeyError as exc:
            raise ValueError(f"package row {exc.args[0]} is not in the key map") from None

    def refine(self, package: SensitivityPackage, activation: Activation, *,
               label: str | None = None) -> SensitivityPackage:
        """The package plus an operating point at the cleared activation (same rows)."""
        if list(package.columns) != list(self.bids.ids):
            raise ValueError("the package's columns are not this DSO's bids")
        n_refined = sum(1 for p in package.points if p.label.startswith("refine"))
        pt = self.point(activation, label=label or f"refine {n_refined + 1}")
        vi, li = self._package_rows(package)
        return package.with_point(pt.label, p_flex_mw=pt.p_flex_mw, vm_pu=pt.vm_pu[vi],
                                  loading_percent=pt.loading_percent[li],
                                  vtdf=_expand(pt.vtdf_cols, pt.bid_column, vi),
                                  ltdf=_expand(pt.ltdf_cols, pt.bid_column, li))

    # ------------------------------------------------------------ validation
    def predict(self, package: SensitivityPackage, clearing: ClearingResult
                ) -> tuple[dict[str, float], dict[str, float]]:
        """The DSO's own linear estimate of a clearing, from the package it published:
        ``({vm row: p.u.}, {loading row: %})`` at the clearing's operating point."""
        if clearing.operating_point is None:
            raise ValueError("the clearing selected no operating point")
        vm, ld = package.predict(clearing.operating_point,
                                 clearing.activation_vector(package.columns))
        return ({k: float(v) for k, v in zip(package.vm_rows, vm)},
                {k: float(v) for k, v in zip(package.loading_rows, ld)})

    def validate(self, activation: Activation, *, package: SensitivityPackage | None = None,
                 predicted_vm_pu: Mapping[str, float] | np.ndarray | None = None,
                 predicted_loading_percent: Mapping[str, float] | np.ndarray | None = None
                 ) -> ValidationReport:
        """AC power flow at the activation, compared with the linear estimates.

        The estimates are the given ``predicted_*`` (``{row key: value}``, or arrays over
        every key-map row in key-map order); else, for a clearing, the DSO's own
        prediction from ``package`` (its private format-1 package, the one it published or
        hardened) or, without one, the clearing's ``predicted_*``. A format-2 clearing
        carries no predictions: without ``package`` it raises ValueError."""
        rows = None
        if isinstance(predicted_vm_pu, np.ndarray) or \
                isinstance(predicted_loading_percent, np.ndarray):
            if not (isinstance(predicted_vm_pu, np.ndarray)
                    and isinstance(predicted_loading_percent, np.ndarray)):
                raise ValueError("validate(): give both predictions as arrays over every "
                                 "key-map row, or both as {row key: value}")
            rows = (np.arange(len(self._vm_keys)),
                    np.asarray(predicted_vm_pu, float).reshape(len(self._vm_keys)),
                    np.arange(len(self._ld_keys)),
                    np.asarray(predicted_loading_percent, float).reshape(len(self._ld_keys)))
        elif predicted_vm_pu is None and predicted_loading_percent is None:
            if not isinstance(activation, ClearingResult):
                raise ValueError("validate() needs a clearing or predicted_vm_pu / "
                                 "predicted_loading_percent")
            if package is not None:
                if activation.operating_point is None:
                    raise ValueError("the clearing selected no operating point")
                vm_pred, ld_pred = package.predict(activation.operating_point,
                                                   activation.activation_vector(package.columns))
                vi, li = self._package_rows(package)
                rows = (vi, vm_pred, li, ld_pred)
            elif activation.ok and not (activation.predicted_vm_pu
                                        or activation.predicted_loading_percent):
                raise ValueError("the clearing carries no predictions (package format 2): "
                                 "pass package=<the DSO's private format-1 package>")
            else:
                predicted_vm_pu = activation.predicted_vm_pu
                predicted_loading_percent = activation.predicted_loading_percent
        try:
            vm, lp = self.power_flow(activation)
        except PointNotConverged as exc:
            return ValidationReport.not_converged(str(exc))
        if rows is not None:
            return ValidationReport.compare_rows(
                limits=self.limits, vm_keys=self._vm_keys, vm_pu=vm, loading_keys=self._ld_keys,
                loading_percent=lp, vm_rows=rows[0], predicted_vm_pu=rows[1],
                loading_rows=rows[2], predicted_loading_percent=rows[3])
        return ValidationReport.compare(
            limits=self.limits, vm_keys=self._vm_keys, vm_pu=vm, loading_keys=self._ld_keys,
            loading_percent=lp, predicted_vm_pu=predicted_vm_pu or {},
            predicted_loading_percent=predicted_loading_percent or {})
