"""Privacy envelopes: a per-bid activation range instead of shared grid constraints.

The DSO publishes, for every bid ``j``, a range ``[lower_mw_j, upper_mw_j]`` (containing 0,
within the bid: ``[min(0, P_M,j), max(0, P_M,j)]``) such that *every* activation inside the
box keeps every voltage and loading row of the chosen operating point(s) within its limits.
The TSO then sees no constraint shared by two bids (``flexcore.market.envelope``).

Box condition (docs/method.md): a box ``[lo, hi]`` satisfies ``a x <= b`` everywhere iff
``sum_j max(a_j lo_j, a_j hi_j) <= b``. Each bid has a fixed sign ``s_j``, so with its range
``r_j >= 0`` the box is ``x_j in [0, s_j r_j]`` and the worst corner of row ``a x <= b`` is
``sum_j max(0, a_j s_j) r_j <= b``: a packing LP in ``r`` (nonnegative coefficients,
``b >= 0`` when activating nothing is within limits).

Rows: at operating point ``i`` the linear model is ``V = V_i + VTDF_i (x - P_i)`` (loadings
alike), i.e. ``vm_min <= (V_i - VTDF_i P_i) + VTDF_i x <= vm_max``, both sides of every
published row, at every point listed in ``point``. Default: the point with activation
fraction 0.5 (else the first point), falling back to the point with fraction 0 (exact at
``x = 0``) when the first one's model puts ``x = 0`` past a limit. When the base case
itself violates a limit no envelope containing 0 exists (EnvelopeError names the row).
The box spans from ``x = 0`` to its far corners and the linearisation error grows with
the square of the distance to the point, so the centre of the bid box errs least at both
ends; measured on Bergwald (``bench/bench_privacy.py``): at a = 0.5 every checked corner
is AC-safe without tightening and the envelope keeps 93 % of the exact maximum deliverable
request, at a = 0 only 82 % (and with ``price_exponent = 1`` its upper corner overloads a
line by 1.2 % in AC: one tightening round), and requiring all three points together keeps
80 %.

Weighting (which envelope among the many feasible ones; measured in
``bench/bench_privacy.py``):

``"price"`` (default, ``price_exponent = 2``)
    LP ``max sum_j (p_max / p_j)^k r_j``: total range weighted by cheapness. ``k`` trades
    range for cost: on Bergwald k = 1 keeps 96 % of the exact maximum deliverable request
    at a cost of privacy <= 5.0 %, k = 2 keeps 93 % at <= 3.9 %, k = 3 only 80 %.
    ``min_share`` (default 0) adds ``sum_j r_j >= min_share * R*``, ``R*`` the
    ``"total"`` envelope's range: a floor on the deliverable maximum, the weighting decides
    among the envelopes above it (single frame: 95 % kept at <= 4.7 % cost of privacy).
``"cost"`` (the cost of privacy bounded by construction)
    The DSO holds the exact linear model and the prices, so it can price the cost of
    privacy before publishing: :func:`cost_levels` clears its own format-1 package
    (:func:`flexcore.market.clear`) at 5, 10, ..., 75 % of the linear maximum deliverable
    upward request (costs ``c_f``). The envelope clearing's cost at request ``q_f`` is at
    most ``p . y_f`` for any ``y_f`` inside the box delivering ``q_f`` (``0 <= y_f <= r``
    on upward bids, ``sum y_f = q_f``), so ``p . y_f <= (1 + eps) c_f`` bounds the cost of
    privacy with linear constraints. One LP over ``r``, every ``y_f`` and ``eps``: stage 1
    the smallest ``eps`` with the upward range >= ``keep`` (0.9) of the linear maximum
    (or of the largest box range, when smaller); stage 2 the largest total range with
    ``eps <= max(eps*, max_cop)`` (cheapness breaks ties). Both targets of the
    single-frame study are then constraints, not outcomes of a weighting; ``max_cop``
    below 5 % leaves a margin for the AC refinement of the exact clearing (its AC-safe
    cost differs from the linear one). Between the levels (5 % apart) the bound holds
    only approximately. Measured in ``bench/bench_privacy.py`` (single frame and
    ``--day``).
``"merit"``
    lexicographic merit order: the cheapest bid gets the largest range the rows allow, then
    the next cheapest, ... With nonnegative coefficients the lexicographic optimum is the
    greedy fill ``r_j = min(|P_M,j|, min_r residual_r / C_rj)`` (later bids at 0 are always
    feasible), computed in closed form. The DSO knows the prices (``BIDS.csv``), and the TSO
    clears in merit order, so this keeps the bids the TSO would pick.
``"price"``
    LP ``max sum_j (p_max / p_j) r_j``: cheapness-weighted total range.
``"total"``
    LP ``max sum_j r_j``: the largest total range in MW (the exact maximum deliverable of
    the point's linear model when all bids point one way).
``"share"``
    LP ``max sum_j r_j / |P_M,j|``: the largest sum of activated shares.

AC check (``linearizer`` given), at the operating point the envelope was computed for
(its fixed injections, i.e. the frame's base case; the linear rows are those of that
point): the corners in both directions (every bid at the end of its range, ``x =
upper_mw`` and ``x = lower_mw``), ``random_corners`` random corners and the price-order
fills at :data:`MERIT_CORNERS` of each direction's range (what the TSO's absolute-cost
clearing activates) are run through the AC power flow (``Linearizer.power_flow``). A
violated row is tightened by the observed mismatch ``ac - linear`` at that corner (as
:func:`flexcore.dso.safety.tighten` does for a clearing) and the envelope recomputed, until
no corner violates a limit or ``max_rounds`` is reached (then :class:`EnvelopeReport`
``ac_safe`` is False).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from flexcore.dso.linearizer import Linearizer
from flexcore.dso.safety import SOLVER_MARGIN_LOADING_PERCENT, SOLVER_MARGIN_VM_PU
from flexcore.errors import FlexcosimError
from flexcore.exchange.bids import BidTable
from flexcore.exchange.enums import PrivacyLevel
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.limits import VIOLATION_TOL, Limits
from flexcore.exchange.package import SensitivityPackage
from flexcore.market.direct import LinearProgram, align_bids, solve_highs

WEIGHTINGS = ("cost", "merit", "price", "total", "share")
#: AC check: besides the full corners, the price-order fills at these shares of each range
MERIT_CORNERS = (0.25, 0.5, 0.75)
#: ``weighting="cost"``: the requests (fractions of the linear maximum) whose cost is bounded
COST_FRACTIONS = tuple(round(0.05 * k, 2) for k in range(1, 16))   # 5 % ... 75 %


class EnvelopeError(FlexcosimError, ValueError):
    """No envelope exists (a row violates its limit with nothing activated) or bad options."""


@dataclass(frozen=True)
class EnvelopeRows:
    """The rows of the chosen points in the activation: ``lo <= c + s x <= hi`` per row,
    plus the DSO-private shifts (``up``/``down``: tightening of the upper / lower side)."""

    point: np.ndarray       # (R,) operating point index of each row
    key: tuple[str, ...]    # (R,) package row key
    is_vm: np.ndarray       # (R,)
    c: np.ndarray           # (R,) value at x = 0 of the linear model
    s: np.ndarray           # (R, n) sensitivities
    lo: np.ndarray          # (R,) lower limit
    hi: np.ndarray          # (R,) upper limit


@dataclass(frozen=True)
class CornerCheck:
    """One corner run through AC power flow in one round."""

    round: int
    corner: str                     # "upper", "lower" or "random k"
    total_mw: float
    converged: bool
    violations: int                 # AC limit violations at this corner
    max_violation: float            # largest excess (p.u. or %, 0 when none)
    max_abs_error_vm_pu: float      # |AC - linear| over voltage rows
    max_abs_error_loading_percent: float


@dataclass
class EnvelopeReport:
    points: tuple[int, ...]
    weighting: str
    upper_total_mw: float = 0.0     # sum of the ranges upward (= sum upper_mw)
    lower_total_mw: float = 0.0     # sum of the ranges downward (= sum lower_mw)
    rounds: int = 0                 # AC tightening rounds
    tightened_rows: int = 0
    ac_checked: bool = False
    ac_safe: bool | None = None     # None: not checked
    corners: list[CornerCheck] = field(default_factory=list)
    levels: CostLevels | None = None   # weighting "cost": the DSO's exact costs



@dataclass(frozen=True)
class CostLevels:
    """``weighting="cost"``: upward requests ``request_mw`` and what the DSO's exact linear
    model clears them for (``exact_cost_eur_per_h``, format 1, :func:`flexcore.market.clear`)."""

    max_deliverable_mw: float
    request_mw: np.ndarray
    exact_cost_eur_per_h: np.ndarray


def cost_levels(package: SensitivityPackage, bids: BidTable, *,
                fractions: Sequence[float] = COST_FRACTIONS) -> CostLevels:
    """The exact linear clearing of ``package`` at ``fractions`` of its maximum deliverable
    upward request (levels the exact model cannot clear, or clears for free, are left out).
    """
    from flexcore.market import clear
    from flexcore.market.diagnose import diagnose
    from flexcore.market.direct import prepare

    tso = align_bids(package, bids).without_bus()
    q_max = float(diagnose(prepare(package, tso, 1e3)).max_deliverable_mw or 0.0)
    req, cost = [], []
    for f in fractions if q_max > 0 else ():
        res = clear(package, tso, f * q_max)
        if res.ok and res.cost_eur_per_h and res.cost_eur_per_h > 0:
            req.append(f * q_max)
            cost.append(float(res.cost_eur_per_h))
    return CostLevels(q_max, np.array(req), np.array(cost))


def envelope_rows(package: SensitivityPackage, points: Sequence[int]) -> EnvelopeRows:
    """Both limits of every row of ``points``, written on the activation ``x``."""
    lim: Limits = package.limits
    parts = []
    for i in points:
        if not 0 <= i < package.m:
            raise EnvelopeError(f"point {i} is not an operating point of the package "
                                f"(m = {package.m})")
        pf = package.p_flex_mw[i]
        for sens, base, keys, lo, hi, is_vm in (
                (package.vtdf[i], package.vm_pu[i], package.vm_rows, lim.vm_min_pu,
                 lim.vm_max_pu, True),
                (package.ltdf[i], package.loading_percent[i], package.loading_rows,
                 lim.loading_min_percent, lim.loading_max_percent, False)):
            r = len(keys)
            parts.append((np.full(r, i), list(keys), np.full(r, is_vm), base - sens @ pf, sens,
                          np.full(r, lo), np.full(r, hi)))
    return EnvelopeRows(point=np.concatenate([p[0] for p in parts]),
                        key=tuple(k for p in parts for k in p[1]),
                        is_vm=np.concatenate([p[2] for p in parts]),
                        c=np.concatenate([p[3] for p in parts]),
                        s=np.vstack([p[4] for p in parts]),
                        lo=np.concatenate([p[5] for p in parts]),
                        hi=np.concatenate([p[6] for p in parts]))


def box_ranges(rows: EnvelopeRows, bids: BidTable, *, weighting: str = "price",
               price_exponent: float = 2.0, min_share: float = 0.0,
               shift_up: np.ndarray | None = None, shift_down: np.ndarray | None = None,
               levels: CostLevels | None = None, keep: float = 0.9, max_cop: float = 0.05
               ) -> np.ndarray:
    """The range ``r_j >= 0`` (MW magnitude) of every bid (bids in package column order).

    ``min_share`` (LP weightings): the total range is at least this share of the largest
    total range (the ``"total"`` envelope's), the weighting decides among those.

    ``shift_up`` / ``shift_down`` (>= 0, per row) tighten the upper / lower limits."""
    if weighting not in WEIGHTINGS:
        raise EnvelopeError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    nr = len(rows.c)
    up = np.zeros(nr) if shift_up is None else shift_up
    dn = np.zeros(nr) if shift_down is None else shift_down
    margin = np.where(rows.is_vm, SOLVER_MARGIN_VM_PU, SOLVER_MARGIN_LOADING_PERCENT)
    sign = np.sign(bids.volume_mw)
    a = rows.s * sign[None, :]                   # row value per MW of range
    coef = np.vstack([np.maximum(a, 0.0), np.maximum(-a, 0.0)])   # upper rows, lower rows
    rhs = np.r_[rows.hi - up - margin - rows.c, rows.c - rows.lo - dn - margin]
    bad = np.flatnonzero(rhs < 0)
    if bad.size:
        k = int(bad[0]) % nr
        side = "upper" if bad[0] < nr else "lower"
        raise EnvelopeError(
            f"row {rows.key[k]!r} (point {int(rows.point[k])}) is past its {side} limit "
            f"with nothing activated: no envelope containing 0 exists")
    cap = np.abs(bids.volume_mw)
    live = (coef > 0).any(axis=1)
    coef, rhs = coef[live], rhs[live]
    if weighting == "merit":
        r = np.zeros(len(cap))
        res = rhs.copy()
        for j in np.lexsort((-cap, bids.price_eur_per_mwh)):   # cheapest first, larger first
            col = coef[:, j]
            on = col > 0
            r[j] = min(cap[j], float(np.min(res[on] / col[on]))) if on.any() else cap[j]
            r[j] = max(r[j], 0.0)
            res -= col * r[j]
        return r
    if weighting == "cost":
        if levels is None:
            raise EnvelopeError("weighting 'cost' needs the exact costs (cost_levels)")
        x = _cost_ranges(coef, rhs, cap, bids, levels, keep=keep, max_cop=max_cop)
        return _fit(x, coef, rhs, cap)
    price = np.maximum(bids.price_eur_per_mwh, 1e-9)
    w = {"price": (price.max() / price) ** price_exponent, "total": np.ones(len(cap)),
         "share": 1.0 / np.maximum(cap, 1e-12)}[weighting]
    n = len(cap)
    a, row_lo, row_hi = sp.csr_matrix(coef), np.full(len(rhs), -np.inf), rhs
    if min_share > 0.0 and weighting != "total":
        # keep min_share of the largest total range (the "total" envelope), then weight
        best = box_ranges(rows, bids, weighting="total", shift_up=shift_up,
                          shift_down=shift_down).sum()
        a = sp.vstack([a, sp.csr_matrix(np.ones((1, n)))], format="csr")
        row_lo, row_hi = np.r_[row_lo, min_share * best], np.r_[row_hi, np.inf]
    lp = LinearProgram(cost=-w, col_lo=np.zeros(n), col_hi=cap, a=a, row_lo=row_lo,
                       row_hi=row_hi, integrality=np.zeros(n, np.int8))
    out = solve_highs(lp)
    if out.x is None:
        raise EnvelopeError(f"envelope LP failed: {out.status} {out.message}")
    return _fit(out.x[:n], coef, rhs, cap)


def _fit(x: np.ndarray, coef: np.ndarray, rhs: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The box condition must hold exactly: clip, and scale down by the solver's residue."""
    x = np.clip(x, 0.0, cap)
    act = coef @ x
    over = act > rhs
    if over.any():
        x *= float(np.min(rhs[over] / act[over]))
    return x


def _cost_ranges(coef: np.ndarray, rhs: np.ndarray, cap: np.ndarray, bids: BidTable,
                 levels: CostLevels, *, keep: float, max_cop: float) -> np.ndarray:
    """``weighting="cost"`` (module docstring): ranges ``r`` and, per level ``f``, an
    activation ``y_f`` inside the box (``0 <= y_f <= r`` on upward bids) delivering the
    level at a cost ``p . y_f <= (1 + eps) c_f``. Stage 1: the smallest ``eps`` with the
    upward range at least ``keep`` of the linear maximum (or of the largest box range, when
    smaller); stage 2: the largest total range with ``eps <= max(eps*, max_cop)``."""
    n, nl = len(cap), len(levels.request_mw)
    up = bids.volume_mw > 0
    price = bids.price_eur_per_mwh
    box_max = float(cap[up].sum())
    # largest upward box range (the "total" envelope restricted to upward bids)
    total = solve_highs(LinearProgram(
        cost=-up.astype(float), col_lo=np.zeros(n), col_hi=cap, a=sp.csr_matrix(coef),
        row_lo=np.full(len(rhs), -np.inf), row_hi=rhs, integrality=np.zeros(n, np.int8)))
    best_up = float(-total.objective) if total.objective is not None else box_max
    floor = min(keep * levels.max_deliverable_mw, best_up * (1.0 - 1e-6))
    # levels beyond the largest box cannot be bounded: left out
    ok = levels.request_mw <= best_up * (1.0 - 1e-6)
    levels = CostLevels(levels.max_deliverable_mw, levels.request_mw[ok],
                        levels.exact_cost_eur_per_h[ok])
    nl = len(levels.request_mw)
    # columns: r (n), y_1..y_L (n each), eps (1)
    nv = n * (1 + nl) + 1
    blocks = [sp.hstack([sp.csr_matrix(coef), sp.csr_matrix((len(rhs), nv - n))])]
    lo, hi = [np.full(len(rhs), -np.inf)], [rhs]
    ones_up = sp.csr_matrix(up.astype(float)[None, :])
    blocks.append(sp.hstack([ones_up, sp.csr_matrix((1, nv - n))]))   # upward range floor
    lo.append(np.array([floor])), hi.append(np.array([np.inf]))
    eye = sp.identity(n, format="csr")
    zero_nn, zero_n1 = sp.csr_matrix((n, n)), sp.csr_matrix((n, 1))
    up_row, price_row = sp.csr_matrix(up.astype(float)[None, :]), sp.csr_matrix(price[None, :])
    zero_1n = sp.csr_matrix((1, n))
    for k in range(nl):
        ys = [eye if kk == k else zero_nn for kk in range(nl)]
        blocks.append(sp.hstack([-eye, *ys, zero_n1]))                  # y_k <= r
        lo.append(np.full(n, -np.inf)), hi.append(np.zeros(n))
        q, c = levels.request_mw[k], levels.exact_cost_eur_per_h[k]
        blocks.append(sp.hstack([zero_1n, *[up_row if kk == k else zero_1n
                                            for kk in range(nl)], sp.csr_matrix((1, 1))]))
        lo.append(np.array([q])), hi.append(np.array([q]))            # sum y_k = q_k
        blocks.append(sp.hstack([zero_1n, *[price_row if kk == k else zero_1n
                                            for kk in range(nl)], sp.csr_matrix([[-c]])]))
        lo.append(np.array([-np.inf])), hi.append(np.array([c]))        # p.y_k <= (1+eps) c_k
    a = sp.vstack(blocks, format="csr")
    row_lo, row_hi = np.concatenate(lo), np.concatenate(hi)
    col_lo = np.zeros(nv)
    col_hi = np.r_[cap, np.tile(np.where(up, cap, 0.0), nl), np.inf]
    integ = np.zeros(nv, np.int8)
    stage1 = solve_highs(LinearProgram(cost=np.r_[np.zeros(nv - 1), 1.0], col_lo=col_lo,
                                       col_hi=col_hi, a=a, row_lo=row_lo, row_hi=row_hi,
                                       integrality=integ))
    if stage1.x is None:
        raise EnvelopeError(f"cost-bounded envelope LP failed: {stage1.status} "
                            f"{stage1.message}")
    eps = max(float(stage1.x[-1]), max_cop)
    col_hi[-1] = eps * (1.0 - 1e-9) if eps == max_cop else eps + 1e-9
    # stage 2: largest total range; cheapness breaks ties (a small weight)
    w = np.r_[-np.ones(n) - 1e-3 * price.min() / np.maximum(price, 1e-9), np.zeros(nv - n)]
    stage2 = solve_highs(LinearProgram(cost=w, col_lo=col_lo, col_hi=col_hi, a=a,
                                       row_lo=row_lo, row_hi=row_hi, integrality=integ))
    out = stage2 if stage2.x is not None else stage1
    return np.asarray(out.x[:n], float)


def envelope_with_report(package: SensitivityPackage, bids: BidTable, *,
                         price_exponent: float = 2.0, min_share: float = 0.0,
                         point: int | Sequence[int] | None = None, weighting: str = "price",
                         linearizer: Linearizer | None = None, random_corners: int = 8,
                         max_rounds: int = 6, rng: np.random.Generator | None = None,
                         levels: CostLevels | None = None, keep: float = 0.9,
                         max_cop: float = 0.05
                         ) -> tuple[HardenedPackage, EnvelopeReport]:
    """The envelope package and the DSO-private report (module docstring). ``levels``,
    ``keep``, ``max_cop``: weighting ``"cost"`` (``levels`` default: :func:`cost_levels`)."""
    if weighting == "cost" and levels is None:
        levels = cost_levels(package, bids)
    more = {"levels": levels, "keep": keep, "max_cop": max_cop}
    if point is None:
        first = default_point(package)
        try:
            return envelope_with_report(package, bids, point=first, weighting=weighting,
                                        price_exponent=price_exponent, min_share=min_share,
                                        linearizer=linearizer,
                                        random_corners=random_corners, max_rounds=max_rounds,
                                        rng=rng, **more)
        except EnvelopeError:
            zero = zero_point(package)
            if zero is None or zero == first:
                raise
            # the a = 0.5 model puts x = 0 past a limit (PV-heavy frames): use the base point
            return envelope_with_report(package, bids, point=zero, weighting=weighting,
                                        price_exponent=price_exponent, min_share=min_share,
                                        linearizer=linearizer,
                                        random_corners=random_corners, max_rounds=max_rounds,
                                        rng=rng, **more)
    points = (point,) if isinstance(point, int) else tuple(int(p) for p in point)
    bids = align_bids(package, bids)
    rows = envelope_rows(package, points)
    rng = rng if rng is not None else np.random.default_rng(0)
    report = EnvelopeReport(points=points, weighting=weighting, levels=levels)
    nr = len(rows.c)
    shift_up, shift_down = np.zeros(nr), np.zeros(nr)
    sign = np.sign(bids.volume_mw)
    while True:
        r = box_ranges(rows, bids, weighting=weighting, price_exponent=price_exponent,
                       min_share=min_share, shift_up=shift_up,
                       shift_down=shift_down, **more)
        lower, upper = np.minimum(sign * r, 0.0), np.maximum(sign * r, 0.0)
        if linearizer is None:
            break
        report.ac_checked = True
        corners = [("upper", upper), ("lower", lower)]
        for k in range(random_corners):
            corners.append((f"random {k + 1}", np.where(rng.random(len(r)) < 0.5, lower, upper)))
        # what the TSO clears (absolute cost): the bids in price order up to their range end
        for f in MERIT_CORNERS:
            for name, end in (("up", upper), ("down", lower)):
                if np.any(end):
                    corners.append((f"merit {name} {f:.0%}", _merit_fill(
                        end, bids.price_eur_per_mwh, f * float(end.sum()))))
        violated = False
        for name, x in corners:
            check, up, dn = _check_corner(linearizer, package, rows, x, name, report.rounds)
            report.corners.append(check)
            if check.violations:
                violated = True
                shift_up, shift_down = shift_up + up, shift_down + dn
        report.ac_safe = not violated
        if not violated or report.rounds >= max_rounds:
            break
        report.rounds += 1
    report.tightened_rows = int(((shift_up > 0) | (shift_down > 0)).sum())
    report.upper_total_mw, report.lower_total_mw = float(upper.sum()), float(lower.sum())
    perm = rng.permutation(package.n)       # columns in a random order (format 2)
    hp = HardenedPackage(
        privacy=PrivacyLevel.ENVELOPE, columns=tuple(package.columns[j] for j in perm),
        points=tuple(package.points[i] for i in points),
        p_flex_mw=package.p_flex_mw[np.ix_(list(points), perm)],
        lower_mw=lower[perm], upper_mw=upper[perm])
    return hp, report


def _merit_fill(end: np.ndarray, price: np.ndarray, request_mw: float) -> np.ndarray:
    """The bids in price order up to their range ends ``end`` (one sign) until
    ``request_mw`` (same sign) is reached: the envelope clearing with absolute cost."""
    x = np.zeros_like(end)
    left = abs(request_mw)
    for j in np.argsort(price, kind="stable"):
        take = min(abs(end[j]), left)
        x[j] = np.sign(end[j]) * take
        left -= take
        if left <= 1e-12:
            break
    return x


def default_point(package: SensitivityPackage) -> int:
    """The point with activation fraction 0.5, else 0 (module docstring)."""
    for i, pt in enumerate(package.points):
        if pt.activation_fraction is not None and abs(pt.activation_fraction - 0.5) < 1e-12:
            return i
    return 0


def zero_point(package: SensitivityPackage) -> int | None:
    """The point with activation fraction 0 (the frame's base case), if any."""
    for i, pt in enumerate(package.points):
        if pt.activation_fraction == 0.0:
            return i
    return None


def envelope(package: SensitivityPackage, bids: BidTable, *,
             point: int | Sequence[int] | None = None, price_exponent: float = 2.0,
             min_share: float = 0.0,
             weighting: str = "price", linearizer: Linearizer | None = None,
             random_corners: int = 8, max_rounds: int = 6,
             rng: np.random.Generator | None = None, **cost: Any) -> HardenedPackage:
    """The envelope package (privacy ``"envelope"``, ``lower_mw``/``upper_mw``, no rows);
    see :func:`envelope_with_report`."""
    return envelope_with_report(package, bids, point=point, weighting=weighting,
                                price_exponent=price_exponent, min_share=min_share,
                                linearizer=linearizer, random_corners=random_corners,
                                max_rounds=max_rounds, rng=rng, **cost)[0]


def _check_corner(linearizer: Linearizer, package: SensitivityPackage, rows: EnvelopeRows,
                  x: np.ndarray, name: str, rnd: int
                  ) -> tuple[CornerCheck, np.ndarray, np.ndarray]:
    """AC at corner ``x``; returns the check and the shifts (upper, lower) it calls for."""
    nr = len(rows.c)
    zero = np.zeros(nr)
    try:
        vm, ld = linearizer.power_flow(_full_order(linearizer, package, x))
    except FlexcosimError:
        return CornerCheck(rnd, name, float(x.sum()), False, 1, float("inf"), float("nan"),
                           float("nan")), zero, zero
    vi, li = linearizer._package_rows(package)
    ac_one = np.r_[vm[vi], ld[li]]           # one point's rows, package order
    ac = np.concatenate([ac_one for _ in set(rows.point.tolist())])
    pred = rows.c + rows.s @ x
    delta = ac - pred
    over_hi = ac - rows.hi
    over_lo = rows.lo - ac
    bad_hi = over_hi > VIOLATION_TOL
    bad_lo = over_lo > VIOLATION_TOL
    up = np.where(bad_hi & (delta > 0), delta, 0.0)
    dn = np.where(bad_lo & (delta < 0), -delta, 0.0)
    # a violation the linear model already sees (solver residue) cannot be fixed by a shift
    up = np.where(bad_hi & (up == 0), over_hi, up)
    dn = np.where(bad_lo & (dn == 0), over_lo, dn)
    viol = np.r_[over_hi[bad_hi], over_lo[bad_lo]]
    err_vm = np.abs(delta[rows.is_vm])
    err_ld = np.abs(delta[~rows.is_vm])
    return CornerCheck(rnd, name, float(x.sum()), True, int(bad_hi.sum() + bad_lo.sum()),
                       float(viol.max()) if viol.size else 0.0,
                       float(err_vm.max()) if err_vm.size else 0.0,
                       float(err_ld.max()) if err_ld.size else 0.0), up, dn


def _full_order(linearizer: Linearizer, package: SensitivityPackage, x: np.ndarray
                ) -> dict[str, float]:
    return {c: float(v) for c, v in zip(package.columns, x)} | {
        b: 0.0 for b in linearizer.bids.ids if b not in set(package.columns)}
