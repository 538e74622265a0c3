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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flexcore.dso.privacy import HardeningKey, assemble_hardened, normalise_sides
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.package import SensitivityPackage
from flexcore.exchange.points import PointInfo
from flexcore.market.multi import SLACK_COLUMN, effective_limits

#: a side the activation exceeds by more than this (normalised) is violated
CUT_TOL = 1e-9
#: sides each DSO adds per clearing (the most violated first), as the single-DSO
#: co-simulation's ``flexcore.dso.frame.CUT_SIDES``
CUT_SIDES = 1


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

    def cut(self, point: int, x: np.ndarray, *, most: int = CUT_SIDES) -> str:
        """Check every side of ``point`` at ``x``: ``"ok"`` (none violated), ``"cut"`` (the
        ``most`` most violated unpublished sides added), ``"published"`` (only published
        sides are violated: the clearing assumed another slack voltage, ask for the link)."""
        idx, excess = self.violated(point, np.asarray(x, float))
        if not len(idx):
            return "ok"
        new = ~self.selected[point][idx]
        if not new.any():
            return "published"
        pick = idx[new][np.argsort(-excess[new], kind="stable")[:most]]
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
