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
``"auto"`` (:func:`choose_envelope`)
    per package, the point and the (exponent, ``min_share``) among
    :data:`AUTO_CANDIDATES` that the DSO's own prices say are best: it clears its exact
    linear model (format 1, :func:`flexcore.market.clear`) at 25 / 50 / 75 % of the linear
    maximum and every candidate envelope at the same requests (the envelope clearing is the
    price-order fill of the upper ranges), and picks the smallest largest cost of privacy
    among the candidates that keep >= 90 % of the maximum (none does: the one keeping
    most). Then the AC corner check runs on the chosen envelope at the chosen point. On
    the single Bergwald frame it picks the default (a = 0.5, k = 2); over a day it moves
    to other points and exponents where PV shifts the binding rows
    (``bench/bench_privacy.py --day``).
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

AC check (``linearizer`` given): the corners in both directions (every bid at the end of
its range, ``x = upper_mw`` and ``x = lower_mw``) and ``random_corners`` random corners
are run through the AC power flow (``Linearizer.power_flow``). A violated row is tightened
by the observed mismatch ``ac - linear`` at that corner (as :func:`flexcore.dso.safety.tighten`
does for a clearing) and the envelope recomputed, until no corner violates a limit or
``max_rounds`` is reached (then :class:`EnvelopeReport` ``ac_safe`` is False).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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

WEIGHTINGS = ("merit", "price", "total", "share")
#: ``weighting="auto"``: (price exponent, min_share) candidates tried at every usable point
AUTO_CANDIDATES = ((1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (1.0, 0.9), (2.0, 0.9), (3.0, 0.9))
#: ``weighting="auto"``: requests (fractions of the linear maximum) the choice is judged at
AUTO_FRACTIONS = (0.25, 0.5, 0.75)


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
    choice: EnvelopeChoice | None = None   # weighting "auto": what was chosen and why


@dataclass(frozen=True)
class EnvelopeChoice:
    """``weighting="auto"``: the candidate chosen for one package, judged by the DSO's own
    linear model before any AC check (:func:`choose_envelope`)."""

    point: int
    price_exponent: float
    min_share: float
    linear_max_mw: float            # the exact (format-1, linear) maximum deliverable
    kept_fraction: float            # the candidate's upward range / linear_max_mw
    max_cost_of_privacy: float | None   # over AUTO_FRACTIONS of linear_max_mw
    candidates: int                 # candidates evaluated


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
               shift_up: np.ndarray | None = None, shift_down: np.ndarray | None = None
               ) -> np.ndarray:
    """The range ``r_j >= 0`` (MW magnitude) of every bid (bids in package column order).

    ``min_share`` (LP weightings): the total range is at least this share of the largest
    total range (the ``"total"`` envelope's), the weighting decides among those.

    ``shift_up`` / ``shift_down`` (>= 0, per row) tighten the upper / lower limits."""
    if weighting not in WEIGHTINGS:
        raise EnvelopeError(f"unknown weighting {weighting!r}; choose one of "
                            f"{WEIGHTINGS + ('auto',)}")
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
    # the box condition must hold exactly: scale down by the solver's residue, if any
    x = np.clip(out.x[:n], 0.0, cap)
    act = coef @ x
    over = act > rhs
    if over.any():
        x *= float(np.min(rhs[over] / act[over]))
    return x


def envelope_with_report(package: SensitivityPackage, bids: BidTable, *,
                         price_exponent: float = 2.0, min_share: float = 0.0,
                         point: int | Sequence[int] | None = None, weighting: str = "price",
                         linearizer: Linearizer | None = None, random_corners: int = 8,
                         max_rounds: int = 6, rng: np.random.Generator | None = None
                         ) -> tuple[HardenedPackage, EnvelopeReport]:
    """The envelope package and the DSO-private report (module docstring)."""
    if weighting == "auto":
        choice = choose_envelope(package, bids, points=None if point is None else (
            (point,) if isinstance(point, int) else tuple(point)))
        hp, rep = envelope_with_report(
            package, bids, point=choice.point, weighting="price",
            price_exponent=choice.price_exponent, min_share=choice.min_share,
            linearizer=linearizer, random_corners=random_corners, max_rounds=max_rounds,
            rng=rng)
        rep.weighting, rep.choice = "auto", choice
        return hp, rep
    if point is None:
        first = default_point(package)
        try:
            return envelope_with_report(package, bids, point=first, weighting=weighting,
                                        price_exponent=price_exponent, min_share=min_share,
                                        linearizer=linearizer,
                                        random_corners=random_corners, max_rounds=max_rounds,
                                        rng=rng)
        except EnvelopeError:
            zero = zero_point(package)
            if zero is None or zero == first:
                raise
            # the a = 0.5 model puts x = 0 past a limit (PV-heavy frames): use the base point
            return envelope_with_report(package, bids, point=zero, weighting=weighting,
                                        price_exponent=price_exponent, min_share=min_share,
                                        linearizer=linearizer,
                                        random_corners=random_corners, max_rounds=max_rounds,
                                        rng=rng)
    points = (point,) if isinstance(point, int) else tuple(int(p) for p in point)
    bids = align_bids(package, bids)
    rows = envelope_rows(package, points)
    rng = rng if rng is not None else np.random.default_rng(0)
    report = EnvelopeReport(points=points, weighting=weighting)
    nr = len(rows.c)
    shift_up, shift_down = np.zeros(nr), np.zeros(nr)
    sign = np.sign(bids.volume_mw)
    while True:
        r = box_ranges(rows, bids, weighting=weighting, price_exponent=price_exponent,
                       min_share=min_share, shift_up=shift_up,
                       shift_down=shift_down)
        lower, upper = np.minimum(sign * r, 0.0), np.maximum(sign * r, 0.0)
        if linearizer is None:
            break
        report.ac_checked = True
        corners = [("upper", upper), ("lower", lower)]
        for k in range(random_corners):
            corners.append((f"random {k + 1}", np.where(rng.random(len(r)) < 0.5, lower, upper)))
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


def _greedy_cost(upper: np.ndarray, price: np.ndarray, request_mw: float) -> float | None:
    """The envelope clearing's cost for an upward request: bids in price order up to their
    upper ends (what :func:`flexcore.market.envelope.clear_envelope` finds with the
    absolute-cost objective). None beyond the envelope."""
    if request_mw > upper.sum() + 1e-9:
        return None
    cost, left = 0.0, request_mw
    for j in np.argsort(price, kind="stable"):
        take = min(upper[j], left)
        cost += take * price[j]
        left -= take
        if left <= 1e-12:
            break
    return cost


def choose_envelope(package: SensitivityPackage, bids: BidTable, *, keep: float = 0.9,
                    points: Sequence[int] | None = None,
                    candidates: Sequence[tuple[float, float]] = AUTO_CANDIDATES,
                    fractions: Sequence[float] = AUTO_FRACTIONS) -> EnvelopeChoice:
    """Which envelope to publish for this package (``weighting="auto"``).

    The DSO holds the exact linear model and the prices, so it can price the cost of
    privacy itself before publishing: it clears its own format-1 package
    (:func:`flexcore.market.clear`, the exact linear optimum, no AC) at ``fractions`` of the
    linear maximum deliverable request, and for every usable point (its model keeps
    ``x = 0`` within limits) and every (price exponent, min_share) candidate computes the
    envelope LP and its clearing cost. Chosen: among candidates keeping at least ``keep``
    of the linear maximum, the smallest largest cost of privacy (ties: the larger range);
    when none keeps that much, the one keeping most. Upward requests are judged (the
    study's direction); the AC corner check follows on the chosen envelope."""
    from flexcore.market import clear
    from flexcore.market.diagnose import diagnose
    from flexcore.market.direct import prepare

    b = align_bids(package, bids)
    tso = b.without_bus()
    q_max = float(diagnose(prepare(package, tso, 1e3)).max_deliverable_mw or 0.0)
    exact = []
    for f in fractions:
        res = clear(package, tso, f * q_max) if q_max > 0 else None
        exact.append(res.cost_eur if res is not None and res.ok else None)
    sign = np.sign(b.volume_mw)
    best: tuple[tuple[float, float, float], EnvelopeChoice] | None = None
    tried = 0
    for i in (range(package.m) if points is None else points):
        rows = envelope_rows(package, (i,))
        for k, share in candidates:
            try:
                r = box_ranges(rows, b, weighting="price", price_exponent=k, min_share=share)
            except EnvelopeError:
                break   # x = 0 past a limit in this point's model: no envelope here
            tried += 1
            upper = np.maximum(sign * r, 0.0)
            kept = float(upper.sum()) / q_max if q_max > 0 else 0.0
            cops = []
            for f, ex in zip(fractions, exact):
                env = _greedy_cost(upper, b.price_eur_per_mwh, f * q_max)
                cops.append(math.inf if env is None else
                            (env / ex - 1.0 if ex else 0.0) if ex is not None else 0.0)
            worst = max(cops) if cops else 0.0
            score = (0.0 if kept >= keep - 1e-9 else 1.0,
                     worst if kept >= keep - 1e-9 else -kept, -kept)
            ch = EnvelopeChoice(point=int(i), price_exponent=float(k), min_share=float(share),
                                linear_max_mw=q_max, kept_fraction=kept,
                                max_cost_of_privacy=None if math.isinf(worst) else worst,
                                candidates=0)
            if best is None or score < best[0]:
                best = (score, ch)
    if best is None:
        raise EnvelopeError("no operating point keeps x = 0 within every limit: no envelope "
                            "containing 0 exists")
    return dataclasses.replace(best[1], candidates=tried)


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


def audit_view(package: HardenedPackage, *, vm_key: str, loading_key: str
               ) -> SensitivityPackage:
    """An envelope as a format-1 package for :func:`flexcore.dso.audit.audit`: the columns
    (ids, order) and points it publishes, and one all-zero voltage and loading row under
    the given keys (the audit needs keys its key map knows and at least one row of each
    kind; zeros carry no information). None of the audit's attacks reads the ranges: what
    they reveal (which bids are capped below their volume) is reported separately by
    ``bench/bench_privacy.py``."""
    m, n = package.m, package.n
    return SensitivityPackage(
        columns=package.columns, vm_rows=(vm_key,), loading_rows=(loading_key,),
        points=package.points, p_flex_mw=package.p_flex_mw, vm_pu=np.zeros((m, 1)),
        loading_percent=np.zeros((m, 1)), vtdf=np.zeros((m, 1, n)), ltdf=np.zeros((m, 1, n)))


def envelope(package: SensitivityPackage, bids: BidTable, *,
             point: int | Sequence[int] | None = None, price_exponent: float = 2.0,
             min_share: float = 0.0,
             weighting: str = "price", linearizer: Linearizer | None = None,
             random_corners: int = 8, max_rounds: int = 6,
             rng: np.random.Generator | None = None) -> HardenedPackage:
    """The envelope package (privacy ``"envelope"``, ``lower_mw``/``upper_mw``, no rows);
    see :func:`envelope_with_report`."""
    return envelope_with_report(package, bids, point=point, weighting=weighting,
                                price_exponent=price_exponent, min_share=min_share,
                                linearizer=linearizer, random_corners=random_corners,
                                max_rounds=max_rounds, rng=rng)[0]


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
