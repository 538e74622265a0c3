"""The DSOs of a region: one per LV area plus the MV DSO, each with its private model.

Each LV DSO linearises its own model (:class:`~flexcore.dso.Linearizer`) at its own bids
and publishes a format-1 package over its LV rows (the slack bus, an MV bus, is left out:
its voltage is the MV DSO's row) plus the column
:data:`~flexcore.market.multi.SLACK_COLUMN`: every row's response to the slack voltage,
by a finite difference of the set point at the zero point (used at every point).

The MV DSO linearises the MV model with one column per LV area: the area's net injection
at its transformer's MV bus, bounded by the area's bids. It learns nothing about the LV
areas but their bid totals; the TSO learns which MV voltage row belongs to which area
(``mv_slack_row``), i.e. how areas nest on MV feeders.

**Safety** (the single-DSO refinement policy, :class:`flexcore.dso.refinement.
RefinementPolicy`, docs/method.md "Refinement rounds and the safety rule"): a DSO publishes
its package with the solver margin (``solver_margin``: :func:`flexcore.dso.safety.
with_solver_margin`, in :meth:`LVDso.published` / :meth:`MVDso.published`) and keeps it
unmargined itself; after a round whose AC check shows rows violated (the base-case rule of
:mod:`flexcore.region.study`), :meth:`LVDso.tighten` / :meth:`MVDso.tighten` shift them at
the selected point by the observed mismatch (:func:`flexcore.dso.safety.tighten`; an LV
package with its slack column, so the mismatch is the one of the clearing's prediction at
the slack change it assumed) before the refinement point is added, and an LV DSO shifts
them at its new refinement point too (:meth:`LVDso.next_round`: that point is exact in the
DSO's own model, so its mismatch at the clearing is the error of the slack voltage the MV
package gave the clearing, seen to persist across rounds). At the package's
**zero point** (fraction 0, the base case from which the clearing's base-case rule widens
limits, :func:`flexcore.market.multi.effective_limits`, and from which the MV voltage
changes are measured) a row is shifted only if its shifted base stays within the published
limits and, for the MV DSO, it is no area's slack-voltage row: a shift there would move the
reference and relax the row at every other point (:func:`shiftable_rows`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandapower as pp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flexcore.dso.linearizer import Linearizer
from flexcore.dso.refinement import RefinementPolicy
from flexcore.dso.safety import TighteningReport, solver_margin_limits, tighten, with_solver_margin
from flexcore.exchange.bids import BidTable
from flexcore.exchange.limits import Limits
from flexcore.exchange.package import (
    AnyPackage,
    SensitivityPackage,
    load_package,
    save_package,
)
from flexcore.grid.gridgen import GridError
from flexcore.market.multi import (
    S_MAX_PU,
    AreaPackage,
    RegionClearing,
    split_slack_column,
    with_slack_column,
)
from flexcore.region.profiles import matching_rows
from flexcore.region.publish import CARRY_FRAMES, CUT_SIDES
from flexcore.region.split import AREA_LOAD_PREFIX, LVArea, Region

#: set-point step of the slack-response finite difference (p.u.)
SLACK_STEP_PU = 1e-4
#: environment variables set to 1 (unless set) for a DSO simulator process: its matrices are
#: small (an LV area's Jacobian ~200 x 200, ~100 right-hand sides), and OpenBLAS's threads
#: contending for shared cores made each sensitivity solve ~40x slower (45 ms instead of
#: ~1 ms per point on 2 cores at load 5; README "Region co-simulation speed")
DSO_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


#: round 0 of a frame also linearises each DSO at its previous frame's cleared activation
WARM_POINT = True
#: packages go to the TSO with the solver margin (the refinement policy's default)
SOLVER_MARGIN = RefinementPolicy().solver_margin


@dataclass(frozen=True)
class FramePolicy:
    """How a DSO starts a new frame, the same for the agents (``agents.region_dso``) and
    the in-process study (:func:`flexcore.region.study.run_region`):

    - ``carry_frames``: at ``privacy = "exact"``, publish from the start the sides (by
      name) and links published at the end of the previous frame
      (:data:`flexcore.region.publish.CARRY_FRAMES`);
    - ``cut_sides``: sides a DSO adds per lazy clearing (None: every violated one;
      :data:`flexcore.region.publish.CUT_SIDES`);
    - ``warm_point``: round 0's package also holds a point at the previous frame's cleared
      activation (LV: at the previous frame's slack change added to the new frame's
      measured slack voltage; MV: at the new frame's measured draws), not counted as a
      refinement round (:data:`WARM_POINT`).
    """

    carry_frames: bool = CARRY_FRAMES
    cut_sides: int | None = CUT_SIDES
    warm_point: bool = WARM_POINT

    def as_dict(self) -> dict:
        return {"carry_frames": self.carry_frames, "cut_sides": self.cut_sides,
                "warm_point": self.warm_point}

    @classmethod
    def of(cls, d: dict | None) -> FramePolicy:
        """From :meth:`as_dict`'s form (missing keys: the defaults)."""
        d = dict(d or {})
        unknown = set(d) - set(cls().as_dict())
        if unknown:
            raise ValueError(f"FramePolicy: unknown option(s) {sorted(unknown)}")
        return cls(**d)

    def warm(self, x: np.ndarray | None) -> bool:
        """Whether round 0 adds the warm point at the previous frame's activation ``x``
        (None: no previous frame; an inactive DSO gets none)."""
        return self.warm_point and x is not None and bool(np.any(np.abs(x) > 1e-9))

    def warm_lv(self, dso: LVDso, x: np.ndarray | None, slack_dv_pu: float | None) -> bool:
        """After ``dso``'s round-0 linearisation of a frame: its warm point at the previous
        frame's activation ``x`` and slack change ``slack_dv_pu`` (from the new base slack
        voltage); True when added."""
        if not self.warm(x):
            return False
        dso.add_point(np.asarray(x), dso.lin.slack_vm_pu + float(slack_dv_pu or 0.0))
        return True

    def warm_mv(self, dso: MVDso, injection_mw: np.ndarray | None,
                draw_change: tuple[np.ndarray, np.ndarray] | None = None) -> bool:
        """The MV DSO's warm point at the previous frame's area injections, at the draws
        of the new frame's base case plus the change that the previous frame's dispatch made
        to them (``draw_change``: measured P, Q change per column: the LV areas' losses and
        reactive changes; None: base draws)."""
        if not self.warm(injection_mw):
            return False
        if draw_change is None:
            dso.add_point(np.asarray(injection_mw))
        else:
            p, q = dso.base_draws()
            dso.add_point(np.asarray(injection_mw), draw_p_mw=p + draw_change[0],
                          draw_q_mvar=q + draw_change[1])
        return True


@dataclass
class LVDso:
    """One LV DSO: its area, bids, linearizer and current package (bid columns only).

    The linearizer is kept across frames: a new frame's loads and slack voltage are
    updates of its power-flow engine (:meth:`relinearize`), and every slack-voltage step
    (the finite difference, a refinement at the measured slack voltage) is
    :meth:`~flexcore.dso.Linearizer.set_slack_vm`, never a rebuild."""

    area: LVArea
    bids: BidTable
    lin: Linearizer
    package: SensitivityPackage
    slack_vtdf: np.ndarray          # (m, v)
    slack_ltdf: np.ndarray          # (m, l)
    slack_offset_pu: np.ndarray     # (m,) slack set point of each point minus the base one
    rounds: int = 0
    #: the inputs (load P, Q, sgen P, slack set point) and outputs of the last round-0
    #: linearisation: a frame with the same inputs gets the same package without one
    _round0: tuple | None = field(default=None, repr=False)
    #: publish with the solver margin (RefinementPolicy.solver_margin)
    solver_margin: bool = SOLVER_MARGIN

    @property
    def name(self) -> str:
        return self.area.name

    def published(self, *, coupled: bool = True) -> SensitivityPackage:
        """What goes to the TSO: the package with the slack column (``coupled``), with the
        solver margin when :attr:`solver_margin`."""
        pkg = self.linear(coupled=coupled)
        return with_solver_margin(pkg) if self.solver_margin else pkg

    def linear(self, *, coupled: bool = True) -> SensitivityPackage:
        """The DSO's own linear model of its rows: the package (with the slack column when
        ``coupled``), nominal limits."""
        if not coupled:
            return self.package
        return with_slack_column(self.package, self.slack_vtdf, self.slack_ltdf,
                                 self.slack_offset_pu)

    def next_round(self, point: int, x: np.ndarray, slack_dv_pu: float | None, *,
                   ac_vm_pu: dict, ac_loading_percent: dict, limits: Limits,
                   tighten_unsafe: bool, refine: bool, slack_vm_pu: float) -> int:
        """The DSO's package for the next round after a round it found unsafe (``ac_*``:
        the violated rows, {row key: AC value}) or inaccurate (module doc "Safety"): with
        ``tighten_unsafe`` the violated rows are shifted at the selected ``point``; with
        ``refine`` a point is added at ``x`` and the measured slack voltage ``slack_vm_pu``,
        and the violated rows are shifted there too by what it predicts for the clearing
        (``x`` at the slack change ``slack_dv_pu`` the clearing assumed): the new point is
        exact in the DSO's own model, so that mismatch is the error of the slack voltage the
        MV package gave the clearing, which the next clearing meets again. Returns the row
        shifts made."""
        unsafe = tighten_unsafe and bool(ac_vm_pu or ac_loading_percent)
        kw = {"ac_vm_pu": ac_vm_pu, "ac_loading_percent": ac_loading_percent,
              "limits": limits}
        n = self.tighten(point, x, slack_dv_pu, **kw).n if unsafe else 0
        if refine:
            self.refine(x, slack_vm_pu)
            if unsafe:
                n += self.tighten(self.package.m - 1, x, slack_dv_pu, **kw).n
        return n

    def tighten(self, point: int, x: np.ndarray, slack_dv_pu: float | None, *,
                ac_vm_pu: dict, ac_loading_percent: dict, limits: Limits
                ) -> TighteningReport:
        """Shift the rows AC violates (``ac_*``: {package row key: AC value} of the violated
        rows only) at ``point`` by the mismatch of the clearing's prediction at activation
        ``x`` and slack change ``slack_dv_pu`` (None: uncoupled); ``limits``: the nominal
        ones (module doc "Safety")."""
        coupled = slack_dv_pu is not None
        pkg = self.linear(coupled=coupled)
        act = np.r_[np.asarray(x, float), float(slack_dv_pu)] if coupled \
            else np.asarray(x, float)
        lo, hi = self.bids.lower_mw, self.bids.upper_mw
        if coupled:
            lo, hi = np.r_[lo, -S_MAX_PU], np.r_[hi, S_MAX_PU]
        vm, ld = shiftable_rows(pkg, point, act, ac_vm_pu, ac_loading_percent,
                                _published_limits(limits, self.solver_margin))
        out, rep = tighten(pkg, point=point, clearing_activation=act, ac_vm_pu=vm,
                           ac_loading_percent=ld, limits=limits, lower_mw=lo, upper_mw=hi)
        self.package = split_slack_column(out)[0] if coupled else out
        return rep

    def _slack_response(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _slack_response(self.lin, self.package, x)

    def refine(self, x: np.ndarray, slack_vm_pu: float | None = None) -> None:
        """One more point at activation ``x`` and the measured slack voltage (default: the
        base set point); the slack response is recomputed there. ``x`` is clipped to the
        bids' bounds first: a clearing may exceed them by the solver's tolerance (e.g.
        -1.9e-11 MW on a bid from 0), and a point outside them fails ``check_bids``."""
        self.add_point(x, slack_vm_pu)
        self.rounds += 1

    def add_point(self, x: np.ndarray, slack_vm_pu: float | None = None) -> None:
        """:meth:`refine` without counting a round (the frame's warm point,
        :class:`FramePolicy`)."""
        x = np.clip(np.asarray(x, float), self.bids.lower_mw, self.bids.upper_mw)
        lin = self.lin
        v0 = lin.slack_vm_pu
        v = v0 if slack_vm_pu is None else float(slack_vm_pu)
        lin.set_slack_vm(v)
        try:
            self.package = lin.refine(self.package, x)
            gv, gl = self._slack_response(x)
        finally:
            lin.set_slack_vm(v0)
        self.slack_vtdf = np.vstack([self.slack_vtdf, gv[None]])
        self.slack_ltdf = np.vstack([self.slack_ltdf, gl[None]])
        self.slack_offset_pu = np.append(self.slack_offset_pu, v - v0)

    def relinearize(self, fractions: tuple[float, ...] = (0.0, 0.5, 1.0), *,
                    net: pp.pandapowerNet | None = None, slack_vm_pu: float | None = None
                    ) -> None:
        """A new round-0 package (refinements dropped, ``rounds`` = 0) at the loads and
        sgen powers of ``net`` (the DSO's model with a new frame's injections: same
        elements, in the same order) and the slack set point ``slack_vm_pu`` (default:
        unchanged). The power-flow engine is updated, not rebuilt (a change of storage
        powers, which it does not track, rebuilds it). Same inputs as the last round-0
        linearisation: its package again, without a power flow."""
        lin = self.lin
        if net is not None:
            _set_base(lin, net)
        if slack_vm_pu is not None and float(slack_vm_pu) != lin.slack_vm_pu:
            lin.set_slack_vm(float(slack_vm_pu))
        self.rounds = 0
        inputs = _inputs(lin, fractions)
        if self._round0 is not None and _same_inputs(self._round0[0], inputs):
            (self.package, self.slack_vtdf, self.slack_ltdf,
             self.slack_offset_pu) = self._round0[1]
            return
        out = _round0(lin, self.area, fractions)
        self.package, self.slack_vtdf, self.slack_ltdf, self.slack_offset_pu = out
        self._round0 = (inputs, out)


def _inputs(lin: Linearizer, fractions: tuple[float, ...]) -> tuple:
    """What a round-0 package depends on (besides the model): loads, the grid's own sgens
    (not the activation sgens), the slack set point, the fractions."""
    pf = lin.pf
    return (pf.load_p_mw.copy(), pf.load_q_mvar.copy(), lin.own_sgen_p_mw(), lin.slack_vm_pu,
            tuple(fractions))


def _same_inputs(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
               for x, y in zip(a, b))


def _round0(lin: Linearizer, area: LVArea, fractions: tuple[float, ...]) -> tuple:
    """(package over the LV rows, slack VTDF, slack LTDF, slack offsets) linearised at the
    linearizer's current loads and slack set point."""
    pkg = lin.linearize(fractions).package
    slack_keys = {k for k, bus in lin.keymap.vm_pu.items() if bus == area.mv_bus}
    pkg = pkg.select_rows([k not in slack_keys for k in pkg.vm_rows],
                          np.ones(len(pkg.loading_rows), bool))
    gv, gl = _slack_response(lin, pkg, np.zeros(len(lin.bids)))
    return pkg, np.tile(gv, (pkg.m, 1)), np.tile(gl, (pkg.m, 1)), np.zeros(pkg.m)


def _slack_response(lin: Linearizer, package: SensitivityPackage, x: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every package row's response to the slack voltage at activation ``x``: a finite
    difference of the set point (two power flows of the same engine)."""
    vm0, ld0 = _rows(lin, package, x)
    v = lin.slack_vm_pu
    lin.set_slack_vm(v + SLACK_STEP_PU)
    try:
        vm1, ld1 = _rows(lin, package, x)
    finally:
        lin.set_slack_vm(v)
    return (vm1 - vm0) / SLACK_STEP_PU, (ld1 - ld0) / SLACK_STEP_PU


def _rows(lin: Linearizer, package: SensitivityPackage, x: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    vm, ld = lin.power_flow(x)
    vi, li = lin.package_rows(package)
    return vm[vi], ld[li]


def make_lv_dso(region: Region, area: LVArea, bids: BidTable, *,
                fractions: tuple[float, ...] = (0.0, 0.5, 1.0), salt: str | None = None
                ) -> LVDso:
    return lv_dso(area, bids, limits=region.lv_limits, fractions=fractions, salt=salt)


def lv_dso(area: LVArea, bids: BidTable, *, limits: Limits,
           fractions: tuple[float, ...] = (0.0, 0.5, 1.0), salt: str | None = None) -> LVDso:
    """The LV DSO of ``area`` linearised at its model's current loads and slack set point."""
    lin = Linearizer(area.net, bids, limits=limits, salt=salt)
    out = _round0(lin, area, fractions)
    return LVDso(area, bids, lin, *out, _round0=(_inputs(lin, fractions), out))


def area_of(net: pp.pandapowerNet) -> LVArea:
    """The :class:`LVArea` of an LV DSO's own model file (``split_region``'s area net as
    written by :func:`write_area`): its name, transformer, the MV bus of its ``ext_grid``;
    draws unknown (NaN)."""
    if len(net.ext_grid) != 1 or len(net.trafo) != 1:
        raise GridError(f"LV area model {net.name!r}: needs exactly one ext_grid and one "
                        f"transformer, has {len(net.ext_grid)} and {len(net.trafo)}")
    mv_bus = int(net.ext_grid.bus.iloc[0])
    buses = net.bus.index.to_numpy(np.int64)
    return LVArea(str(net.name), int(net.trafo.index[0]), mv_bus, buses[buses != mv_bus], net,
                  math.nan, math.nan)


def write_area(net: pp.pandapowerNet, path: str | Path) -> Path:
    """A DSO's private model as a pandapower JSON file (region element indices kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pp.to_json(net, str(path))
    return path


def read_area(path: str | Path) -> pp.pandapowerNet:
    path = Path(path)
    if not path.is_file():
        raise GridError(f"area model file not found: {path}")
    return pp.from_json(str(path))


@dataclass
class MVDso:
    """The MV DSO: one column per LV area (its injection at the area's MV bus)."""

    bids: BidTable                  # one pseudo-bid per area: ids = area names, price 0
    lin: Linearizer
    package: SensitivityPackage
    slack_row: dict[str, str] = field(default_factory=dict)   # area -> vm row key
    area_load: dict[str, int] = field(default_factory=dict)   # area -> its load in the model
    rounds: int = 0
    #: publish with the solver margin (RefinementPolicy.solver_margin)
    solver_margin: bool = SOLVER_MARGIN

    def published(self) -> SensitivityPackage:
        """What goes to the TSO: the package, with the solver margin when
        :attr:`solver_margin`."""
        return with_solver_margin(self.package) if self.solver_margin else self.package

    def tighten(self, point: int, injection_mw: np.ndarray, *, ac_vm_pu: dict,
                ac_loading_percent: dict, limits: Limits) -> TighteningReport:
        """As :meth:`LVDso.tighten`, over the area injections; the areas' slack-voltage rows
        stay at the zero point (module doc "Safety")."""
        y = np.asarray(injection_mw, float)
        vm, ld = shiftable_rows(self.package, point, y, ac_vm_pu, ac_loading_percent,
                                _published_limits(limits, self.solver_margin),
                                fixed_at_zero=set(self.slack_row.values()))
        self.package, rep = tighten(self.package, point=point, clearing_activation=y,
                                    ac_vm_pu=vm, ac_loading_percent=ld, limits=limits,
                                    lower_mw=self.bids.lower_mw, upper_mw=self.bids.upper_mw)
        return rep

    def refine(self, injection_mw: np.ndarray, *, draw_p_mw: np.ndarray | None = None,
               draw_q_mvar: np.ndarray | None = None) -> None:
        """One more point at the areas' activation ``injection_mw``; with the measured
        draws at the transformers' MV side (P, Q per area, the MV DSO's own meters) the
        point is computed at them, so the areas' loss and reactive changes are in it.
        ``injection_mw`` is clipped to the areas' bounds (solver tolerance, as for LV)."""
        self.add_point(injection_mw, draw_p_mw=draw_p_mw, draw_q_mvar=draw_q_mvar)
        self.rounds += 1

    def _load_pos(self) -> np.ndarray:
        pf = self.lin.pf
        at = {int(i): k for k, i in enumerate(pf.load_index)}
        return np.array([at[self.area_load[c]] for c in self.bids.ids], dtype=np.int64)

    def base_draws(self) -> tuple[np.ndarray, np.ndarray]:
        """The areas' draws (P, Q per column) in the model's base case."""
        pos = self._load_pos()
        return self.lin.pf.load_p_mw[pos].copy(), self.lin.pf.load_q_mvar[pos].copy()

    def add_point(self, injection_mw: np.ndarray, *, draw_p_mw: np.ndarray | None = None,
                  draw_q_mvar: np.ndarray | None = None) -> None:
        """:meth:`refine` without counting a round (the frame's warm point)."""
        injection_mw = np.clip(np.asarray(injection_mw, float), self.bids.lower_mw,
                               self.bids.upper_mw)
        lin = self.lin
        if draw_p_mw is None or draw_q_mvar is None:
            self.package = lin.refine(self.package, injection_mw)
        else:  # the area loads' powers are updates of the engine's arrays, no rebuild
            pf = lin.pf
            pos = self._load_pos()
            p0, q0 = pf.load_p_mw[pos].copy(), pf.load_q_mvar[pos].copy()
            pf.load_p_mw[pos] = np.asarray(draw_p_mw) + injection_mw
            pf.load_q_mvar[pos] = np.asarray(draw_q_mvar)
            pf.changed()
            try:
                self.package = lin.refine(self.package, injection_mw)
            finally:
                pf.load_p_mw[pos], pf.load_q_mvar[pos] = p0, q0
                pf.changed()


    def relinearize(self, fractions: tuple[float, ...] = (0.0, 0.5, 1.0), *,
                    net: pp.pandapowerNet | None = None) -> None:
        """A new round-0 package (refinements dropped) at the loads and sgen powers of
        ``net`` (the MV model with a new frame's injections and the areas' measured draws
        on their loads; same elements in the same order): an update of the power-flow
        engine, no rebuild (unless storage powers changed)."""
        if net is not None:
            _set_base(self.lin, net)
        self.package = self.lin.linearize(fractions).package
        self.rounds = 0


def _published_limits(limits: Limits, margin: bool) -> Limits:
    return solver_margin_limits(limits) if margin else limits


def shiftable_rows(package: SensitivityPackage, point: int, activation: np.ndarray,
                   ac_vm_pu: dict, ac_loading_percent: dict, limits: Limits, *,
                   fixed_at_zero: set[str] | frozenset[str] = frozenset()
                   ) -> tuple[dict, dict]:
    """The violated rows (``ac_*``: {row key: AC value}) that :func:`flexcore.dso.safety.
    tighten` may shift at ``point``: all of them, except at the package's zero point, where
    a row stays when its shifted base (``base + ac - predicted``) would leave ``limits``
    (the published ones: the clearing would widen its limit to the shifted base there and
    relax it at every other point, :func:`flexcore.market.multi.effective_limits`) or when
    it is in ``fixed_at_zero`` (the MV areas' slack-voltage rows: the reference of the
    slack changes)."""
    zero = next((i for i, p in enumerate(package.points) if p.activation_fraction == 0.0),
                None)
    if point != zero:
        return ac_vm_pu, ac_loading_percent
    pred_vm, pred_ld = package.predict(point, np.asarray(activation, float))
    out = []
    for ac, keys, pred, base, lo, hi in (
            (ac_vm_pu, package.vm_rows, pred_vm, package.vm_pu[point], limits.vm_min_pu,
             limits.vm_max_pu),
            (ac_loading_percent, package.loading_rows, pred_ld, package.loading_percent[point],
             limits.loading_min_percent, limits.loading_max_percent)):
        pos = {k: r for r, k in enumerate(keys)}
        out.append({k: v for k, v in ac.items() if k not in fixed_at_zero
                    and lo <= base[pos[k]] + v - pred[pos[k]] <= hi})
    return out[0], out[1]


def _set_base(lin: Linearizer, net: pp.pandapowerNet) -> None:
    """The loads' and sgens' powers of ``net`` (the model the linearizer was built from,
    with new values) into the linearizer's engine; storage powers, which the engine does
    not track, by a rebuild when they changed."""
    own = lin.pf.net
    if "storage" in net and len(net.storage) and not np.array_equal(
            own.storage.p_mw.to_numpy(float), net.storage.p_mw.to_numpy(float)):
        own.storage["p_mw"] = net.storage.p_mw.to_numpy(float)
        lin.invalidate()
    lin.set_base(load_p_mw=net.load.p_mw.to_numpy(float),
                 load_q_mvar=net.load.q_mvar.to_numpy(float),
                 sgen_p_mw=net.sgen.p_mw.to_numpy(float))


def make_mv_dso(region: Region, lv: list[LVDso], *,
                fractions: tuple[float, ...] = (0.0, 0.5, 1.0), salt: str | None = None,
                model_names: list[str] | None = None) -> MVDso:
    """The MV DSO of ``region`` over the areas of ``lv`` (columns: their public names;
    ``model_names``: their names in the MV model, default the area models' own names)."""
    if model_names is None:
        model_names = [str(d.area.net.name) for d in lv]
    return mv_dso(region.mv_net, [d.name for d in lv], [d.area.mv_bus for d in lv],
                  [float(d.bids.volume_mw.sum()) for d in lv], limits=region.mv_limits,
                  fractions=fractions, salt=salt, model_names=model_names)


def mv_dso(mv_net: pp.pandapowerNet, names: list[str], mv_buses: list[int],
           volume_mw: list[float], *, limits: Limits,
           fractions: tuple[float, ...] = (0.0, 0.5, 1.0), salt: str | None = None,
           model_names: list[str] | None = None) -> MVDso:
    """The MV DSO over ``mv_net`` (areas as loads ``"area <name>"``) with one column per
    area (its bid total ``volume_mw`` at its MV bus), linearised at the model's loads.
    ``names``: the areas' public ids (its column ids); ``model_names``: their names in
    ``mv_net`` when these differ (the DSOs tell the MV DSO their public ids)."""
    bids = BidTable(ids=tuple(names), volume_mw=np.asarray(volume_mw, float),
                    price_eur_per_mwh=np.zeros(len(names)),
                    bus=np.asarray(mv_buses, np.int64))
    lin = Linearizer(mv_net, bids, limits=limits, salt=salt)
    pkg = lin.linearize(fractions).package
    by_bus = {bus: k for k, bus in lin.keymap.vm_pu.items()}
    load_names = lin.net.load.name.astype(str)
    area_load = {n: int(lin.net.load.index[load_names == AREA_LOAD_PREFIX + m][0])
                 for n, m in zip(names, model_names or names)}
    return MVDso(bids, lin, pkg, {n: by_bus[b] for n, b in zip(names, mv_buses)}, area_load)


def area_packages(lv: list[LVDso], mv: MVDso | None) -> list[AreaPackage]:
    """What the TSO clears: every LV DSO's published package (the coupling metadata only
    with an MV DSO)."""
    out = []
    for d in lv:
        pkg = d.published(coupled=mv is not None)
        out.append(AreaPackage(d.name, pkg, d.bids,
                               mv_column=d.name if mv is not None else None,
                               mv_slack_row=mv.slack_row[d.name] if mv is not None else None))
    return out


def bare(package: SensitivityPackage) -> SensitivityPackage:
    return split_slack_column(package)[0]


def injections(lv: list[LVDso], clearing: RegionClearing) -> np.ndarray:
    return np.array([clearing.activation_mw[d.name].sum() for d in lv])


class SignedExchange:
    """Packages cross from each DSO to the TSO as signed package folders: every DSO signs
    with its own Ed25519 key, the TSO loads each folder with that DSO's public key as the
    only trusted one (:func:`~flexcore.exchange.package.load_package`, signature required)
    and clears what it loaded. ``folder`` receives ``<dso>/round-<k>/``."""

    def __init__(self, folder: Path, names: list[str]):
        self.folder = Path(folder)
        self.keys = {n: Ed25519PrivateKey.generate() for n in names}
        self.shipped = 0
        self._round = 0
        self._last: dict[str, tuple[AnyPackage, AnyPackage]] = {}

    def _ship(self, name: str, package: AnyPackage) -> AnyPackage:
        last = self._last.get(name)
        if last is not None and last[0] is package:   # unchanged since it last crossed
            return last[1]
        d = self.folder / name / f"round-{self._round}"
        save_package(package, d, signing_key=self.keys[name])
        loaded = load_package(d, allow_full=isinstance(package, SensitivityPackage),
                              trust=[self.keys[name].public_key()], require_signature=True)
        self.shipped += 1
        self._last[name] = (package, loaded)
        return loaded

    def __call__(self, areas: list[AreaPackage], mv: AnyPackage | None
                 ) -> tuple[list[AreaPackage], AnyPackage | None]:
        out = [replace(a, package=self._ship(a.name, a.package)) for a in areas]
        mv_out = self._ship("mv", mv) if mv is not None else None
        self._round += 1
        return out, mv_out


# --------------------------------------------------------------------------- frames
_TABLES = (("load", ("p_mw", "q_mvar")), ("sgen", ("p_mw",)), ("storage", ("p_mw",)))


@dataclass
class FrameInjections:
    """Per-frame injections of a set of elements (region element index and bus): what each
    DSO (its own elements) and the region grid (all of them) write into their models before
    a frame. Built from the region's profiles (``flexcore.region.profiles.RegionProfiles``,
    its fields of the same names); stored as a plain ``.npz`` (no pickle). A row of a net
    is written only when both its index and its bus match (the MV model's area loads are
    new rows whose indices may equal LV loads' indices)."""

    load_index: np.ndarray          # (n_load,) region load indices
    load_bus: np.ndarray
    load_p_mw: np.ndarray           # (frames, n_load)
    load_q_mvar: np.ndarray
    sgen_index: np.ndarray
    sgen_bus: np.ndarray
    sgen_p_mw: np.ndarray           # (frames, n_sgen)
    storage_index: np.ndarray
    storage_bus: np.ndarray
    storage_p_mw: np.ndarray        # (frames, n_storage)
    #: :meth:`_matching`'s answers per (net, table)
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    _NAMES = ("load_index", "load_bus", "load_p_mw", "load_q_mvar", "sgen_index", "sgen_bus",
              "sgen_p_mw", "storage_index", "storage_bus", "storage_p_mw")

    @property
    def frames(self) -> int:
        return int(self.load_p_mw.shape[0])

    @classmethod
    def of(cls, profiles: object) -> FrameInjections:
        """From any object with the ten fields (a ``RegionProfiles``)."""
        return cls(*(np.asarray(getattr(profiles, n)) for n in cls._NAMES))

    def window(self, start: int, n: int) -> FrameInjections:
        """Frames ``start .. start + n - 1`` as frames 0 .. n - 1."""
        cut = slice(start, start + n)
        return FrameInjections(*(getattr(self, f) if f.endswith(("_index", "_bus"))
                                 else getattr(self, f)[cut] for f in self._NAMES))

    def _rows(self, net: pp.pandapowerNet, table: str) -> tuple[np.ndarray, np.ndarray]:
        """(positions in this object, positions in ``net[table]``) of the matching rows."""
        return matching_rows(net, table, getattr(self, f"{table}_index"),
                             getattr(self, f"{table}_bus"))

    def subset(self, net: pp.pandapowerNet) -> FrameInjections:
        """Only the elements ``net`` holds (a DSO's share)."""
        parts: list[np.ndarray] = []
        for table, cols in _TABLES:
            mine, _ = self._rows(net, table)
            mine = np.sort(mine)
            parts += [getattr(self, f"{table}_index")[mine], getattr(self, f"{table}_bus")[mine]]
            parts += [getattr(self, f"{table}_{c}")[:, mine] for c in cols]
        return FrameInjections(*parts)

    def apply(self, net: pp.pandapowerNet, frame: int) -> None:
        """Write frame ``frame``'s values into the matching rows of ``net``. The matching
        rows of a net are found once and kept while its tables keep their index and buses;
        when they are a whole table in order (a DSO's own elements), each column is
        replaced at once."""
        for table, cols in _TABLES:
            mine, rows, whole = self._matching(net, table)
            if not len(rows):
                continue
            df = net[table]
            for col in cols:
                values = getattr(self, f"{table}_{col}")[frame, mine]
                if whole:   # float64 columns: the same values as written by iloc
                    df[col] = np.array(values, dtype=np.float64)
                else:
                    df.iloc[rows, df.columns.get_loc(col)] = values

    def _matching(self, net: pp.pandapowerNet, table: str
                  ) -> tuple[np.ndarray, np.ndarray, bool]:
        """:meth:`_rows` and whether they are every row of ``net[table]`` in order, kept
        per net and table while the table's index (the same object) and buses stay."""
        memo = self._memo
        df = net[table] if table in net else None
        index = None if df is None else df.index
        bus = None if df is None else df["bus"].to_numpy(np.int64)
        hit = memo.get((id(net), table))
        if hit is not None and hit[0] is net and hit[1] is index and (
                bus is None or np.array_equal(hit[2], bus)):
            return hit[3]
        mine, rows = self._rows(net, table)
        whole = df is not None and len(rows) == len(df) and bool(
            np.array_equal(rows, np.arange(len(df)))) and all(
            c in df and df[c].dtype == np.float64 for c in dict(_TABLES)[table])
        memo[(id(net), table)] = (net, index, bus, (mine, rows, whole))
        return mine, rows, whole

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez(fh, **{n: getattr(self, n) for n in self._NAMES})
        return path

    @classmethod
    def load(cls, path: str | Path) -> FrameInjections:
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                return cls(*(z[n] for n in cls._NAMES))
        except (OSError, KeyError, ValueError) as exc:
            raise GridError(f"{path}: not a frame-injections file ({exc})") from None
