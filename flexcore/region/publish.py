"""What the region's DSOs publish in the coupled clearing at ``privacy = "exact"``: format-2
packages (:class:`~flexcore.exchange.hardened.HardenedPackage`) with only the rows the
clearing of the announced request needs, found by lazy constraint generation as in the
single-DSO co-simulation (``exact_rows = "request"``, :class:`flexcore.dso.privacy.
RequestRows`), extended to the coupling (README "Privacy of the region's packages").

Each DSO holds every side of its private linear model (:class:`LazySides`; format-1 rows
with the region's base-case rule applied, so a row already past its limit at the zero point
has its limit at its base value). It starts by publishing the sides already at or past a
limit at ``x = 0``. After each clearing:

- the **MV DSO** evaluates all its limit sides at the cleared area injections (its selected
  point) and adds the most violated unpublished one; it computes every area's slack-voltage
  change ``sigma*_a`` from its private model at those injections and tells each LV DSO its
  own (a number per round, DSO to DSO; the TSO does not see it);
- each **LV DSO** evaluates all its sides at its cleared activation and ``sigma*_a``: an
  unpublished violated side is added (the most violated one); if only published sides are
  violated, the clearing assumed another slack voltage than the MV model gives, and the LV
  DSO asks the MV DSO to publish its **link**: the two sides ``sigma_a = V_a(k) - V_a(0) +
  T_a(k) (y - P_k)`` per MV point, over the injections ``y`` and a column ``sigma_a``.

A round in which no DSO adds anything is feasible for the complete coupled model (every
side holds at ``sigma*``) and optimal for a relaxation of it, hence its optimum: the cost of
the format-1 coupled clearing. What stays revealed: every published link is an exact row
``T_a`` over all areas' injections, i.e. the shared path of area ``a`` with every other
area, which gives the nested groups on ``a``'s path to the substation
(:func:`flexcore.region.audit.attack_links`); areas whose rows never bind stay unlinked.

**Across frames** (:data:`CARRY_FRAMES`, :class:`flexcore.region.dsos.FramePolicy`): a DSO
may start a new frame with the sides (by name, at every point of the new package) and the
links it had published at the end of the previous frame, as :meth:`LazySides.carry_over`
does between the rounds of one frame, so that the frame's first clearing already holds the
rows that bound the last one. The optimum is the same (the lazy loop still ends only when
no DSO adds anything, and more published sides only tighten the relaxation towards the
complete model); what changes is what the TSO sees: rows a frame may not need itself, but
only rows that the same DSO published for an earlier frame of the same request (the
carried set is the previous frame's published set, so a side once published stays
published while the run lasts; its values are the new frame's linearisation). The rows
stay a subset of the DSO's private model (``rows_held`` in ``frames.csv`` counts them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexcore.dso.privacy import HardeningKey, assemble_hardened, normalise_sides
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.package import SensitivityPackage
from flexcore.exchange.points import PointInfo
from flexcore.market.multi import (
    SLACK_COLUMN,
    AreaPackage,
    RegionClearing,
    effective_limits,
)

#: a side the activation exceeds by more than this (normalised) is violated
CUT_TOL = 1e-9
#: sides each DSO adds per clearing (the most violated first), as the single-DSO
#: co-simulation's ``flexcore.dso.frame.CUT_SIDES``; None: every violated unpublished side
CUT_SIDES: int | None = 1
#: a DSO starts each new frame with the sides (by name) and links it had published at the
#: end of the previous frame (module doc, "Across frames")
CARRY_FRAMES = True


def slack_column_id(area_id: str) -> str:
    """The MV package's column of area ``area_id``'s slack-voltage change."""
    return f"{area_id}{SLACK_COLUMN}"


@dataclass
class _Columns:
    """The column part of a package (what ``privacy.assemble_hardened`` reads)."""

    columns: tuple[str, ...]
    points: tuple[PointInfo, ...]
    p_flex_mw: np.ndarray
    undeliverable: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return len(self.columns)


@dataclass
class LazySides:
    """DSO-private: per point ``i`` all sides ``a[i] x <= c[i]`` of the DSO's linear model
    (``x`` over ``columns``), their names ``(row key, side)``, which are published, and,
    for the MV DSO, which sides are an area's link (``link[i][k]`` = area index, -1 for a
    limit side)."""

    columns: tuple[str, ...]
    points: tuple[PointInfo, ...]
    p_flex_mw: np.ndarray
    a: list[np.ndarray]
    c: list[np.ndarray]
    names: list[list[tuple[str, str]]]
    link: list[np.ndarray]
    request_mw: float
    selected: list[np.ndarray] = field(default_factory=list)
    #: column index of each area's slack change (MV DSO), area index -> column
    sigma: dict[int, int] = field(default_factory=dict)
    linked: set[int] = field(default_factory=set)
    cuts: int = 0
    #: sides added per :meth:`cut` (None: every violated unpublished one)
    per_cut: int | None = CUT_SIDES
    key: HardeningKey | None = None     # of the last publication (private)

    def __post_init__(self) -> None:
        if not self.selected:
            self.selected = []
            for a, c, link in zip(self.a, self.c, self.link):
                _, rhs, _ = normalise_sides(a, c)
                self.selected.append((rhs <= 0.0) & (link < 0))   # at or past a limit

    # ------------------------------------------------------------------ checks
    def violated(self, point: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the limit sides of ``point`` that ``x`` violates (normalised test)
        and their excess."""
        a, rhs, _ = normalise_sides(self.a[point], self.c[point])
        excess = a @ x - rhs
        bad = (excess > CUT_TOL * (1.0 + np.abs(rhs))) & (self.link[point] < 0)
        idx = np.flatnonzero(bad)
        return idx, excess[idx]

    def cut(self, point: int, x: np.ndarray) -> str:
        """Check every side of ``point`` at ``x``: ``"ok"`` (none violated), ``"cut"`` (the
        :attr:`per_cut` most violated unpublished sides added), ``"published"`` (only
        published sides are violated: the clearing assumed another slack voltage, ask for
        the link)."""
        idx, excess = self.violated(point, np.asarray(x, float))
        if not len(idx):
            return "ok"
        new = ~self.selected[point][idx]
        if not new.any():
            return "published"
        pick = idx[new][np.argsort(-excess[new], kind="stable")[:self.per_cut]]
        self.selected[point][pick] = True
        self.cuts += 1
        return "cut"

    def add_link(self, area: int) -> bool:
        """Publish area ``area``'s link sides at every point (False: already published)."""
        if area in self.linked:
            return False
        self.linked.add(area)
        for sel, link in zip(self.selected, self.link):
            sel |= link == area
        return True

    # ----------------------------------------------------------------- publish
    def publish(self, *, rng: np.random.Generator | None = None) -> HardenedPackage:
        """The format-2 package of the sides published so far (columns: all but the slack
        columns of unlinked areas); its private key is kept in :attr:`key`."""
        drop = {col for area, col in self.sigma.items() if area not in self.linked}
        keep = np.array([j for j in range(len(self.columns)) if j not in drop], np.int64)
        per_point = []
        for a, c, names, sel in zip(self.a, self.c, self.names, self.selected):
            idx = np.flatnonzero(sel)
            an, rhs, scale = normalise_sides(a[idx], c[idx])
            per_point.append((an[:, keep], rhs, scale, [names[k] for k in idx]))
        cols = _Columns(tuple(self.columns[j] for j in keep), self.points,
                        self.p_flex_mw[:, keep])
        total = sum(len(c) for c in self.c)
        kept = sum(int(s.sum()) for s in self.selected)
        pkg, self.key = assemble_hardened(
            cols, per_point, excluded=[], rng=rng,  # type: ignore[arg-type]
            screening={"sides_total": total, "sides_kept": kept, "method": "region_lazy_rows",
                       "cuts": self.cuts, "links": len(self.linked)},
            totals={"lps": 0}, t0=0.0, request_mw=self.request_mw)
        return pkg

    @property
    def published_sides(self) -> int:
        return int(sum(s.sum() for s in self.selected))

    def carry_over(self, previous: LazySides) -> None:
        """Publish from the start the sides (by name, at every point) and links that
        ``previous`` (the same DSO's sides of the round before, a refinement ago) had
        published."""
        names = {nm for nms, sel in zip(previous.names, previous.selected)
                 for nm, s in zip(nms, sel) if s}
        for sel, nms in zip(self.selected, self.names):
            sel |= np.fromiter((nm in names for nm in nms), bool, len(nms))
        for a in previous.linked:
            self.add_link(a)


def _limit_sides(pkg: SensitivityPackage, i: int, lb: np.ndarray, ub: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Both sides of every row of point ``i``: ``S x <= ub - V + S P`` and ``-S x <= V - lb -
    S P`` (``lb``, ``ub`` per row: vm rows, then loading rows)."""
    sens = np.concatenate([pkg.vtdf[i], pkg.ltdf[i]], axis=0)
    base = np.concatenate([pkg.vm_pu[i], pkg.loading_percent[i]])
    shift = sens @ pkg.p_flex_mw[i]
    keys = list(pkg.vm_rows) + list(pkg.loading_rows)
    fin_u, fin_l = np.isfinite(ub), np.isfinite(lb)
    a = np.vstack([sens[fin_u], -sens[fin_l]])
    c = np.concatenate([(ub - base + shift)[fin_u], (base - lb - shift)[fin_l]])
    names = [(k, "upper") for k, f in zip(keys, fin_u) if f] + \
        [(k, "lower") for k, f in zip(keys, fin_l) if f]
    return a, c, names


def lv_sides(package: SensitivityPackage, *, request_mw: float) -> LazySides:
    """An LV DSO's sides over its bids and the slack column (``package`` as published in
    format 1 for the coupled clearing, with :data:`SLACK_COLUMN`)."""
    lb, ub = effective_limits(package)
    a, c, names = zip(*(_limit_sides(package, i, lb, ub) for i in range(package.m)))
    return LazySides(package.columns, package.points, package.p_flex_mw, list(a), list(c),
                     [list(n) for n in names], [np.full(len(ci), -1) for ci in c],
                     float(request_mw))


def mv_sides(package: SensitivityPackage, slack_rows: list[str], *, request_mw: float
             ) -> LazySides:
    """The MV DSO's sides over the area injections (``package.columns``) and one slack
    column per area (``slack_column_id``): its limit sides and, per area ``a`` with slack
    voltage row ``slack_rows[a]``, the two link sides ``T x - sigma_a <= T P_k - (V_k -
    V_0)`` and its negation (V_0: the zero point)."""
    n = package.n
    z = next(i for i, p in enumerate(package.points) if p.activation_fraction == 0.0)
    lb, ub = effective_limits(package)
    rows = [package.vm_rows.index(k) for k in slack_rows]
    sig_ids = tuple(slack_column_id(c) for c in package.columns)
    a_out, c_out, n_out, l_out = [], [], [], []
    for i in range(package.m):
        a, c, names = _limit_sides(package, i, lb, ub)
        t = package.vtdf[i][rows]                                 # (areas, n)
        dv = package.vm_pu[i][rows] - package.vm_pu[z][rows]
        const = t @ package.p_flex_mw[i] - dv
        eye = np.eye(n)
        link_a = np.vstack([np.hstack([t, -eye]), np.hstack([-t, eye])])
        a_out.append(np.vstack([np.hstack([a, np.zeros((len(c), n))]), link_a]))
        c_out.append(np.concatenate([c, const, -const]))
        n_out.append(names + [(f"link:{k}", "upper") for k in slack_rows] +
                     [(f"link:{k}", "lower") for k in slack_rows])
        l_out.append(np.concatenate([np.full(len(c), -1), np.arange(n), np.arange(n)]))
    p_flex = np.hstack([package.p_flex_mw, np.zeros((package.m, n))])
    return LazySides(package.columns + sig_ids, package.points, p_flex, a_out, c_out, n_out,
                     l_out, float(request_mw), sigma={k: n + k for k in range(n)})


def slack_changes(package: SensitivityPackage, slack_rows: list[str], point: int,
                  injection_mw: np.ndarray) -> np.ndarray:
    """The MV DSO's private prediction of every area's slack-voltage change (from the zero
    point's voltage) at point ``point`` and the injections ``injection_mw``."""
    z = next(i for i, p in enumerate(package.points) if p.activation_fraction == 0.0)
    rows = [package.vm_rows.index(k) for k in slack_rows]
    vm, _ = package.predict(point, np.asarray(injection_mw, float))
    out: np.ndarray = vm[rows] - package.vm_pu[z][rows]
    return out


# --------------------------------------------------------------------------- per DSO
#: the MV DSO's role name (public: its package is the one over area injections)
MV_ROLE = "mv"


def shuffle_rng(shuffle_seed: int, seed: int) -> np.random.Generator:
    """The generator of a DSO's format-2 shuffles (its private shuffle seed and the
    scenario seed, :class:`flexcore.region.ids.DsoIdentity`)."""
    return np.random.default_rng([int(shuffle_seed), int(seed)])


@dataclass
class LVPublisher:
    """One LV DSO's side of the exact publication within one clearing round (private to
    the DSO): its sides, what it published last, and the slack-voltage change the MV DSO
    told it for the last clearing (``sigma``; None when uncoupled or not yet told)."""

    sides: LazySides
    rng: np.random.Generator
    package: HardenedPackage
    sigma: float | None = None

    @classmethod
    def start(cls, package: SensitivityPackage, *, request_mw: float,
              rng: np.random.Generator, previous: LVPublisher | None = None,
              per_cut: int | None = CUT_SIDES) -> LVPublisher:
        """The sides of ``package`` (format 1 as published for the coupled clearing, with
        the slack column; uncoupled: without it), carrying over what ``previous`` published
        (the round before, or with :data:`CARRY_FRAMES` the previous frame's last round),
        and the first format-2 package; ``per_cut``: :attr:`LazySides.per_cut`."""
        sides = lv_sides(package, request_mw=request_mw)
        sides.per_cut = per_cut
        if previous is not None:
            sides.carry_over(previous.sides)
        return cls(sides, rng, sides.publish(rng=rng))

    def check(self, point: int, x: np.ndarray, sigma: float | None) -> str:
        """Check every side at the cleared activation ``x`` of ``point`` and the MV DSO's
        ``sigma``: ``"ok"``, ``"cut"`` (a side added, :attr:`package` republished) or
        ``"published"`` (only published sides violated: ask the MV DSO for the link)."""
        self.sigma = None if sigma is None else float(sigma)
        x = np.asarray(x, float)
        state = self.sides.cut(point, x if sigma is None else np.r_[x, float(sigma)])
        if state == "cut":
            self.package = self.sides.publish(rng=self.rng)
        return state

    def predict(self, dso: Any, point: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The DSO's private prediction of its rows (``dso``: its
        :class:`~flexcore.region.dsos.LVDso`) at ``point`` and ``x``, at the slack change
        the MV DSO told it (format 2 carries no base values: only the DSO can predict)."""
        vm, ld = dso.package.predict(point, np.asarray(x, float))
        if self.sigma is not None:
            ds = self.sigma - float(dso.slack_offset_pu[point])
            vm, ld = vm + dso.slack_vtdf[point] * ds, ld + dso.slack_ltdf[point] * ds
        return vm, ld


@dataclass
class MVPublisher:
    """The MV DSO's side of the exact publication within one clearing round (private):
    its private model ``model`` (format 1, for the slack changes), its sides, the areas'
    voltage rows, what it published last and whether it has more to publish."""

    model: SensitivityPackage
    slack_rows: list[str]
    sides: LazySides
    rng: np.random.Generator
    package: HardenedPackage
    changed: bool = False

    @classmethod
    def start(cls, model: SensitivityPackage, slack_rows: list[str], *, request_mw: float,
              rng: np.random.Generator, previous: MVPublisher | None = None,
              per_cut: int | None = CUT_SIDES) -> MVPublisher:
        """As :meth:`LVPublisher.start`, over the MV model's sides and links."""
        sides = mv_sides(model, slack_rows, request_mw=request_mw)
        sides.per_cut = per_cut
        if previous is not None:
            sides.carry_over(previous.sides)
        return cls(model, list(slack_rows), sides, rng, sides.publish(rng=rng))

    def check(self, point: int, injection_mw: np.ndarray) -> np.ndarray:
        """Check the limit sides at the cleared injections of ``point`` (adds the most
        violated unpublished one) and return every area's slack-voltage change there (each
        goes to its LV DSO only)."""
        y = np.asarray(injection_mw, float)
        if self.sides.cut(point, np.r_[y, np.zeros(len(y))]) == "cut":
            self.changed = True
        return slack_changes(self.model, self.slack_rows, point, y)

    def link(self, area: int) -> None:
        """An LV DSO (area index ``area``) asked for its link."""
        if self.sides.add_link(area):
            self.changed = True

    def republish(self) -> bool:
        """Publish again when a side or link was added since (True then)."""
        if not self.changed:
            return False
        self.package = self.sides.publish(rng=self.rng)
        self.changed = False
        return True

    def slack_columns(self, area_ids: list[str]) -> dict[str, str]:
        """Area id -> its slack column in :attr:`package`, for the linked areas (what the
        TSO needs to tie an LV block to its link)."""
        return {a: slack_column_id(a) for k, a in enumerate(area_ids)
                if k in self.sides.linked}


# --------------------------------------------------------------------------- in process
@dataclass
class LazyPublication:
    """The exact publication of one clearing round with every DSO in one process (the
    study, :func:`flexcore.region.study.run_region`): the per-DSO publishers above, composed
    as the co-simulation's messages compose them (``agents.region_dso``): the MV DSO checks
    and tells each LV DSO its slack change, each LV DSO checks and asks for its link.
    ``setup``: a :class:`flexcore.region.study.RegionSetup` (its ``lv``, ``mv`` and
    ``shuffle_seeds``)."""

    request_mw: float
    lvs: list[LVPublisher]
    mvp: MVPublisher | None
    clearings: int = 0
    sigma: np.ndarray | None = None

    @classmethod
    def start(cls, setup: Any, request_mw: float, seed: int,
              previous: LazyPublication | None = None, *,
              per_cut: int | None = CUT_SIDES) -> LazyPublication:
        """Every DSO's sides at its package as published (``published()``: with the solver
        margin, as the agents publish it); the sides (by name) and links of
        ``previous`` (the frame's earlier refinement round, or the previous frame's last
        one) are published from the start. Each DSO shuffles with its own generator
        (``setup.shuffle_seeds``, else ``seed``; with ``previous``: its generator)."""
        coupled = setup.mv is not None

        def rng(k: int, name: str) -> np.random.Generator:
            if previous is not None:
                return (previous.lvs[k].rng if k < len(previous.lvs) else
                        previous.mvp.rng)   # type: ignore[union-attr]
            return shuffle_rng(setup.shuffle_seeds.get(name, 0), seed)

        lvs = [LVPublisher.start(d.published(coupled=coupled),
                                 request_mw=request_mw, rng=rng(k, d.name), per_cut=per_cut,
                                 previous=previous.lvs[k] if previous is not None else None)
               for k, d in enumerate(setup.lv)]
        mvp = None
        if setup.mv is not None:
            mvp = MVPublisher.start(setup.mv.published(), [setup.mv.slack_row[d.name]
                                                       for d in setup.lv],
                                    request_mw=request_mw, rng=rng(len(setup.lv), MV_ROLE),
                                    per_cut=per_cut,
                                    previous=previous.mvp if previous is not None else None)
        return cls(float(request_mw), lvs, mvp)

    # what the study's tests and audits read
    @property
    def lv(self) -> list[LazySides]:
        return [p.sides for p in self.lvs]

    @property
    def mv(self) -> LazySides | None:
        return self.mvp.sides if self.mvp is not None else None

    @property
    def packages(self) -> list[HardenedPackage]:
        return [p.package for p in self.lvs]

    @property
    def mv_package(self) -> HardenedPackage | None:
        return self.mvp.package if self.mvp is not None else None

    def area_packages(self, setup: Any) -> list[AreaPackage]:
        coupled = self.mvp is not None
        linked = self.mvp.sides.linked if self.mvp is not None else set()
        return [AreaPackage(d.name, p.package, d.bids, mv_column=d.name if coupled else None,
                            mv_slack_column=slack_column_id(d.name) if k in linked else None)
                for k, (d, p) in enumerate(zip(setup.lv, self.lvs))]

    def check(self, setup: Any, clearing: RegionClearing) -> bool:
        """Every DSO checks its private sides at the clearing (module doc); True when some
        DSO published more."""
        self.clearings += 1
        changed = False
        self.sigma = None
        if self.mvp is not None:
            assert clearing.mv_point is not None
            y = np.array([clearing.activation_mw[d.name].sum() for d in setup.lv])
            self.sigma = self.mvp.check(clearing.mv_point, y)
        for j, (d, p) in enumerate(zip(setup.lv, self.lvs)):
            state = p.check(clearing.points[d.name], clearing.activation_mw[d.name],
                            None if self.sigma is None else self.sigma[j])
            if state == "cut":
                changed = True
            elif state == "published" and self.mvp is not None:
                self.mvp.link(j)
        if self.mvp is not None and self.mvp.republish():
            changed = True
        return changed

    def predict(self, setup: Any, clearing: RegionClearing) -> None:
        """The DSOs' private predictions of their rows at the clearing, written into
        ``clearing`` (format 2 carries none): LV rows at the MV DSO's slack change."""
        for d, p in zip(setup.lv, self.lvs):
            i, x = clearing.points[d.name], clearing.activation_mw[d.name]
            vm, ld = p.predict(d, i, x)
            if p.sigma is not None:
                clearing.slack_dv_pu[d.name] = p.sigma
            clearing.predicted_vm_pu[d.name] = vm
            clearing.predicted_loading_percent[d.name] = ld
        if self.mvp is not None and clearing.mv_point is not None:
            y = np.array([clearing.activation_mw[d.name].sum() for d in setup.lv])
            clearing.mv_predicted_vm_pu, clearing.mv_predicted_loading_percent = \
                self.mvp.model.predict(clearing.mv_point, y)

    def summary(self) -> dict[str, Any]:
        lv_sides_n = [s.published_sides for s in self.lv]
        mv = self.mv
        return {"clearings": self.clearings,
                "lv_sides_published": int(sum(lv_sides_n)),
                "lv_sides_total": int(sum(sum(len(c) for c in s.c) for s in self.lv)),
                "lv_packages_with_sides": int(sum(n > 0 for n in lv_sides_n)),
                "mv_limit_sides_published": 0 if mv is None else int(sum(
                    (sel & (lk < 0)).sum() for sel, lk in zip(mv.selected, mv.link))),
                "mv_links_published": 0 if mv is None else len(mv.linked),
                "areas": len(self.lv)}
