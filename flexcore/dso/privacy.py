"""Harden a format-1 package into format 2 (docs/method.md, "Screening and privacy").

:func:`harden` turns the DSO's private :class:`SensitivityPackage` into the
:class:`~flexcore.exchange.hardened.HardenedPackage` it publishes, and a
:class:`HardeningKey` that never leaves the DSO. Per operating point ``i``:

1. every voltage/loading row gives two sides on the activation ``x``:
   ``s · x <= ub - base + s · P_i`` and ``-s · x <= base - lb - s · P_i``;
2. the closed-form box bound (``flexcore.market.direct._keep_rows`` without margin) drops
   the sides that cannot reach their limit anywhere in the bid box;
3. an LP per remaining side (highspy, one model, warm-started) maximises it over
   box ∩ Voronoi cell of ``i`` ∩ the sides still kept; a side whose maximum does not
   exceed its limit is dropped, one at a time, so the feasible set of region ``i`` is
   exactly unchanged (redundancy removal);
4. each kept side is normalised to ``a · x <= rhs`` with ``rhs`` in {-1, 0, 1}, rows and
   columns are shuffled, a region that is empty on its own is published as excluded.

:class:`RequestRows` (the co-simulation's default) publishes instead, for one announced
request, only the sides that request's clearing needs: those at or past their limit, then
those the TSO's clearings violate (added by the DSO after each clearing until none is);
no LP. :func:`balance_max` is the exact bound over the bid box and the balance
``sum(x) = request`` (measured in bench/bench_screening.py ``--balance``).
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt

from flexcore.exchange.enums import PrivacyLevel
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.package import SensitivityPackage
from flexcore.market.direct import _new_highs

#: a side whose maximum exceeds its limit by at most this (relative) is redundant
_DROP_TOL = 1e-9
#: |limit - value| below this (relative to the row's scale) publishes rhs = 0
_ZERO_TOL = 1e-12


@dataclass(frozen=True)
class PublishedRow:
    """What one published row is: point, format-1 row key, side (``"upper"``/``"lower"``),
    and the factor ``scale`` with ``a = side_sign * sensitivity / scale``."""

    point: int
    key: str
    side: str
    scale: float


@dataclass(frozen=True)
class HardeningKey:
    """DSO-private: published row -> format-1 row, the column permutation, the salt.

    ``rows[i][k]`` describes published row ``k`` of point ``i``; ``column_order[k]`` is the
    format-1 column index of published column ``k``. Never put it into a package folder.
    """

    salt: str
    column_order: tuple[int, ...]
    rows: tuple[tuple[PublishedRow, ...], ...]
    excluded: tuple[int, ...] = ()
    report: dict[str, Any] = field(default_factory=dict)


def _sides(pkg: SensitivityPackage, i: int) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """All sides of point i as ``(A, c)`` with ``A x <= c`` and their (key, side)."""
    lim = pkg.limits
    pf = pkg.p_flex_mw[i]
    a_parts, c_parts, names = [], [], []
    for sens, base, lb, ub, keys in (
            (pkg.vtdf[i], pkg.vm_pu[i], lim.vm_min_pu, lim.vm_max_pu, pkg.vm_rows),
            (pkg.ltdf[i], pkg.loading_percent[i], lim.loading_min_percent,
             lim.loading_max_percent, pkg.loading_rows)):
        shift = sens @ pf
        a_parts += [sens, -sens]
        c_parts += [ub - base + shift, base - lb - shift]
        names += [(k, "upper") for k in keys] + [(k, "lower") for k in keys]
    return np.vstack(a_parts), np.concatenate(c_parts), names


def normalise_sides(a: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a x <= c`` as ``a' x <= rhs``, rhs in {-1, 0, 1}; returns a', rhs, scale."""
    norm = np.linalg.norm(a, axis=1)
    zero = np.abs(c) <= _ZERO_TOL * np.maximum(norm, 1.0)
    scale = np.where(zero, np.where(norm > 0, norm, 1.0), np.abs(c))
    rhs = np.where(zero, 0.0, np.sign(c))
    return a / scale[:, None], rhs, scale


class _RegionLP:
    """box ∩ Voronoi cell ∩ candidate rows of one point, one HiGHS model for all LPs."""

    def __init__(self, a: np.ndarray, rhs: np.ndarray, cell_a: np.ndarray,
                 cell_rhs: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        inf = highspy.kHighsInf
        self.h = _new_highs()
        self.h.setOptionValue("presolve", "off")
        n = len(lower)
        self.r = a.shape[0]
        dense = np.vstack([a, cell_a]) if cell_a.size else a
        ub = np.r_[rhs, cell_rhs]
        nrow = dense.shape[0]
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n, nrow
        lp.col_cost_ = np.zeros(n)
        lp.col_lower_, lp.col_upper_ = np.asarray(lower, float), np.asarray(upper, float)
        lp.row_lower_, lp.row_upper_ = np.full(nrow, -inf), np.asarray(ub, float)
        mat = lp.a_matrix_
        mat.format_ = highspy.MatrixFormat.kRowwise
        mat.start_ = np.arange(0, nrow * n + 1, n, dtype=np.int32)
        mat.index_ = np.tile(np.arange(n, dtype=np.int32), nrow)
        mat.value_ = dense.ravel().astype(float)
        mat.num_col_, mat.num_row_ = n, nrow
        self.h.passModel(lp)
        self.n = n
        self.rhs = np.asarray(rhs, float)

    def feasible(self) -> bool:
        self.h.changeColsCost(self.n, np.arange(self.n, dtype=np.int32), np.zeros(self.n))
        self.h.run()
        return bool(self.h.getModelStatus() == highspy.HighsModelStatus.kOptimal)

    def maximum_without(self, k: int, a_k: np.ndarray) -> float | None:
        """max ``a_k · x`` with row ``k`` relaxed (None: infeasible / failed)."""
        inf = highspy.kHighsInf
        self.h.changeRowBounds(k, -inf, inf)
        self.h.changeColsCost(self.n, np.arange(self.n, dtype=np.int32), -a_k)
        self.h.run()
        ok = self.h.getModelStatus() == highspy.HighsModelStatus.kOptimal
        value = -float(self.h.getInfo().objective_function_value) if ok else None
        return value

    def keep(self, k: int) -> None:
        self.h.changeRowBounds(k, -highspy.kHighsInf, float(self.rhs[k]))


def _screen_sequential(a_c: np.ndarray, rhs_c: np.ndarray, box_max_c: np.ndarray,
                       cell_a: np.ndarray, cell_rhs: np.ndarray, lo_box: np.ndarray,
                       hi_box: np.ndarray) -> tuple[np.ndarray, bool, int]:
    """One LP per candidate over box ∩ cell ∩ all candidates still kept (the reference
    method, used when the point has no strictly interior point): ``(kept, feasible, lps)``."""
    region = _RegionLP(a_c, rhs_c, cell_a, cell_rhs, lo_box, hi_box)
    if not region.feasible():
        return np.zeros(len(rhs_c), bool), False, 1
    kept = np.ones(len(rhs_c), bool)
    # tightest-looking rows last: loose rows are tested (and dropped) while the others hold
    for k in np.argsort(-(box_max_c - rhs_c)):
        value = region.maximum_without(int(k), a_c[k])
        if value is not None and value <= rhs_c[k] + _DROP_TOL * (1.0 + abs(rhs_c[k])):
            kept[k] = False
        else:
            region.keep(int(k))
    return kept, True, 1 + len(rhs_c)


@dataclass
class _Memo:
    """What one screening learnt about one side (DSO-private, reused as a hint only).

    ``witness``: a point of box ∩ cell (MW, format-1 column order) that satisfied the other
    kept sides and violated this one (it proved the side irredundant). ``mu`` / ``nu``:
    multipliers >= 0 of the LP dual that proved the side redundant, over kept sides (by
    name) and cell rows (by the other point's label). Both are re-checked on the current
    data before use (a witness by evaluation, a certificate by weak duality), so a stale
    hint costs an LP, never exactness.
    """

    witness: np.ndarray | None = None
    mu: dict[tuple[str, str], float] | None = None
    nu: dict[str, float] | None = None


@dataclass
class ScreeningCache:
    """Memory of earlier screenings (DSO-private): per point label, per side ``(key,
    side)``, a witness or a dual certificate (:class:`_Memo`). Valid while the columns are
    the same; :func:`harden` resets it when they change (new bid set or topology)."""

    columns: tuple[str, ...] | None = None
    memo: dict[str, dict[tuple[str, str], _Memo]] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    def use(self, columns: tuple[str, ...]) -> None:
        if columns != self.columns:
            self.columns, self.memo = tuple(columns), {}


class _Working:
    """HiGHS model of box ∩ cell ∩ the working sides R (rows on group sums ``y``; columns
    with identical entries in every candidate side form one group, so the dense rows have
    one entry per group). Rows are added as R grows; each LP changes only the objective."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, cell_a: np.ndarray,
                 cell_rhs: np.ndarray, group: np.ndarray, ngroups: int, merged: bool) -> None:
        inf = highspy.kHighsInf
        h = _new_highs()
        h.setOptionValue("presolve", "off")
        n = len(lower)
        h.addVars(n, np.asarray(lower, float), np.asarray(upper, float))
        for c, r in zip(cell_a, cell_rhs):
            nz = np.flatnonzero(c).astype(np.int32)
            h.addRow(-inf, float(r), len(nz), nz, c[nz].astype(float))
        self.ncell = len(cell_rhs)
        if merged:
            h.addVars(ngroups, np.full(ngroups, -inf), np.full(ngroups, inf))
            order = np.argsort(group, kind="stable")
            bounds = np.searchsorted(group[order], np.arange(ngroups + 1))
            for g in range(ngroups):
                idx = order[bounds[g]:bounds[g + 1]].astype(np.int32)
                h.addRow(0.0, 0.0, len(idx) + 1, np.r_[idx, n + g].astype(np.int32),
                         np.r_[np.ones(len(idx)), -1.0])
            self.ycols = np.arange(n, n + ngroups, dtype=np.int32)
            self.first_row = self.ncell + ngroups
        else:
            self.ycols = np.arange(n, dtype=np.int32)
            self.first_row = self.ncell
        self.h, self.n = h, n
        self.ncol = h.getNumCol()
        self.cols = np.arange(self.ncol, dtype=np.int32)
        self.rows: list[int] = []  # candidate index of each working row, in model order
        self.lps = 0

    def add(self, k: int, a_y: np.ndarray, rhs: float) -> None:
        self.h.addRow(-highspy.kHighsInf, float(rhs), len(a_y), self.ycols, a_y.astype(float))
        self.rows.append(k)

    def relax(self, pos: int, rhs: float | None) -> None:
        """Working row ``pos`` relaxed (``rhs`` None) or restored to ``<= rhs``."""
        self.h.changeRowBounds(self.first_row + pos, -highspy.kHighsInf,
                               highspy.kHighsInf if rhs is None else float(rhs))

    def maximise(self, a_y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
        """max ``a_y · y``: (value, x, row duals as multipliers >= 0) or None (failed)."""
        cost = np.zeros(self.ncol)
        cost[self.ycols] = -a_y
        self.h.changeColsCost(self.ncol, self.cols, cost)
        self.h.run()
        self.lps += 1
        if self.h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        sol = self.h.getSolution()
        x = np.asarray(sol.col_value)[:self.n]
        mult = np.maximum(-np.asarray(sol.row_dual), 0.0)
        return -float(self.h.getInfo().objective_function_value), x, mult


def _interior(ay: np.ndarray, rhs: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              cell_a: np.ndarray, cell_rhs: np.ndarray, group: np.ndarray, ng: int,
              merged: bool) -> np.ndarray | None:
    """A point of box ∩ cell with every side at least ``s`` inside (max ``s <= 1``), or
    None when ``s`` cannot exceed 1e-7 (no interior: the reference method takes over)."""
    work = _Working(lo, hi, cell_a, cell_rhs, group, ng, merged)
    h = work.h
    h.addVar(-highspy.kHighsInf, 1.0)
    s_col = h.getNumCol() - 1
    idx = np.r_[work.ycols, s_col].astype(np.int32)
    for a_k, r in zip(ay, rhs):
        h.addRow(-highspy.kHighsInf, float(r), len(idx), idx, np.r_[a_k, 1.0])
    cost = np.zeros(s_col + 1)
    cost[s_col] = -1.0
    h.changeColsCost(s_col + 1, np.arange(s_col + 1, dtype=np.int32), cost)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    col = np.asarray(h.getSolution().col_value)
    if not col[s_col] > 1e-7:
        return None
    return np.clip(col[:work.n], lo, hi)


def _below(value: np.ndarray | float, rhs: np.ndarray | float) -> np.ndarray | bool:
    return np.asarray(value) <= np.asarray(rhs) + _DROP_TOL * (1.0 + np.abs(rhs))


def _screen_clarkson(a_c: np.ndarray, rhs_c: np.ndarray, names_c: list[tuple[str, str]],
                     cell_a: np.ndarray, cell_rhs: np.ndarray, cell_labels: list[str],
                     lo: np.ndarray, hi: np.ndarray, z_x: np.ndarray,
                     hints: dict[tuple[str, str], _Memo], counts: dict[str, int]
                     ) -> tuple[np.ndarray, dict[tuple[str, str], _Memo]] | None:
    """Exact redundancy removal over box ∩ cell for the candidate sides ``a_c x <= rhs_c``
    (docs/method.md, "Screening and privacy"); None when ``z_x`` is not strictly inside.

    Working set R (all published): a side joins R only when a ray from the interior point
    ``z`` to an LP maximiser hits it first (it is irredundant), or as a hint (kept last
    time). A side is dropped when its maximum over box ∩ cell ∩ R stays within its limit:
    by a hinted dual certificate (weak duality, no LP) or by an LP over R only (Clarkson's
    method, small LPs). Hinted R sides are confirmed by their witness or by an LP at the
    end and dropped there, one at a time, if redundant; every drop keeps the feasible set.
    """
    n = a_c.shape[1]
    _, first, group = np.unique(a_c.T, axis=0, return_index=True, return_inverse=True)
    group = np.asarray(group).ravel()
    ng = len(first)
    merged = ng < 0.8 * n
    if merged:
        ay = np.ascontiguousarray(a_c[:, first])
        def to_y(x: np.ndarray) -> np.ndarray:
            return np.bincount(group, weights=x, minlength=ng)
    else:
        ay, group, ng = a_c, np.arange(n), n
        def to_y(x: np.ndarray) -> np.ndarray:
            return x
    zy = to_y(z_x)
    slack = rhs_c - ay @ zy
    if not np.all(slack > 1e-7 * (1.0 + np.abs(rhs_c))) or (
            len(cell_rhs) and not np.all(cell_a @ z_x <= cell_rhs)):
        # the point itself is not strictly inside: the deepest point of the region (one LP)
        z_x = _interior(ay, rhs_c, lo, hi, cell_a, cell_rhs, group, ng, merged)
        if z_x is None:
            return None
        zy = to_y(z_x)
        slack = rhs_c - ay @ zy
        counts["lps"] += 1
    c = len(rhs_c)
    work = _Working(lo, hi, cell_a, cell_rhs, group, ng, merged)
    in_r = np.zeros(c, bool)
    dropped = np.zeros(c, bool)
    confirmed = np.zeros(c, bool)
    memo: dict[tuple[str, str], _Memo] = {}
    pos_of: dict[int, int] = {}

    def add(k: int) -> None:
        pos_of[k] = len(work.rows)
        in_r[k] = True
        work.add(k, ay[k], rhs_c[k])

    # 1. hinted working set, confirmed by witnesses (evaluated on today's data): a ray
    # from z to a witness (a point of box ∩ cell) crosses first a side that is
    # irredundant; that side is confirmed and gets the ray's point as its next witness
    seeds = [k for k in range(c) if (m := hints.get(names_c[k])) is not None
             and m.witness is not None]
    for k in seeds:
        add(k)
    if seeds:
        wx = np.clip(np.stack([hints[names_c[k]].witness for k in seeds], axis=1),
                     lo[:, None], hi[:, None])
        ok = np.all(cell_a @ wx <= cell_rhs[:, None] - 1e-12, axis=0) if len(cell_rhs) \
            else np.ones(len(seeds), bool)
        if merged:
            wy = np.zeros((ng, len(seeds)))
            np.add.at(wy, group, wx)
        else:
            wy = wx
        den = ay @ (wy - zy[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(den > 0, slack[:, None] / den, np.inf)
        for s in np.flatnonzero(ok):
            col = t[:, s]
            order = np.argpartition(col, 1)[:2] if c > 1 else np.array([0])
            order = order[np.argsort(col[order])]
            t_h = col[order[0]]
            if not t_h < 1.0:
                continue
            h = int(order[0])
            t_2 = col[order[1]] if len(order) > 1 else np.inf
            if not t_2 > t_h * (1 + 1e-9):
                continue  # a tie: the sides hit together need not be irredundant
            if not in_r[h]:
                add(h)
            if not confirmed[h]:
                confirmed[h] = True
                t_w = 0.5 * (t_h + min(t_2, 1.0))
                memo[names_c[h]] = _Memo(witness=z_x + t_w * (wx[:, s] - z_x))
    counts["witness_confirmed"] += int(confirmed.sum())
    # 2. hinted dual certificates: max over box ∩ cell ∩ R <= mu·rhs_R + nu·d + boxmax(res)
    rpos = {names_c[k]: k for k in np.flatnonzero(in_r)}
    cpos = {lab: j for j, lab in enumerate(cell_labels)}
    rset, cset = set(rpos), set(cpos)
    cert = [k for k in range(c) if not in_r[k] and (m := hints.get(names_c[k])) is not None
            and m.mu is not None and m.nu is not None and rset.issuperset(m.mu)
            and cset.issuperset(m.nu)]
    if cert:
        rows_r = np.array(sorted(rpos.values()), dtype=int)
        col_r = {k: j for j, k in enumerate(rows_r)}
        mu = np.zeros((len(cert), len(rows_r)))
        nu = np.zeros((len(cert), len(cell_rhs)))
        for t, k in enumerate(cert):
            m = hints[names_c[k]]
            assert m.mu is not None and m.nu is not None
            for nm, v in m.mu.items():
                mu[t, col_r[rpos[nm]]] = v
            for lab, v in m.nu.items():
                nu[t, cpos[lab]] = v
        res_y = ay[cert] - mu @ ay[rows_r] if len(rows_r) else ay[cert].copy()
        res_x = res_y[:, group] - (nu @ cell_a if len(cell_rhs) else 0.0)
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        bound = (mu @ rhs_c[rows_r] if len(rows_r) else 0.0) + (
            nu @ cell_rhs if len(cell_rhs) else 0.0) + res_x @ centre + np.abs(res_x) @ half
        for t, k in enumerate(cert):
            if _below(bound[t], rhs_c[k]):
                dropped[k] = True
                memo[names_c[k]] = hints[names_c[k]]
        counts["certificate_drops"] += int(dropped.sum())

    def certificate(mult: np.ndarray) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
        mu_d = {names_c[k]: float(mult[work.first_row + j]) for j, k in enumerate(work.rows)
                if mult[work.first_row + j] > 0.0}
        nu_d = {cell_labels[j]: float(mult[j]) for j in range(work.ncell) if mult[j] > 0.0}
        return mu_d, nu_d

    # 3. the other candidates: Clarkson's loop with ray shooting from z
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    for k in range(c):
        while not (in_r[k] or dropped[k]):
            out = work.maximise(ay[k])
            if out is None:
                return None
            value, x_star, mult = out
            if _below(value, rhs_c[k]):
                dropped[k] = True
                mu_d, nu_d = certificate(mult)
                memo[names_c[k]] = _Memo(mu=mu_d, nu=nu_d)
                # the same multipliers bound every other undecided side (weak duality):
                # nearly parallel sides are often redundant for the same reason
                undecided = np.flatnonzero(~dropped & ~in_r)
                undecided = undecided[undecided > k]
                if len(undecided):
                    rows_m = mult[work.first_row:]
                    sup = np.flatnonzero(rows_m > 0)
                    r_idx = np.array(work.rows, dtype=int)[sup]
                    v_y = rows_m[sup] @ ay[r_idx] if len(sup) else np.zeros(ng)
                    res = (ay[undecided] - v_y)[:, group]
                    const = float(rows_m[sup] @ rhs_c[r_idx]) if len(sup) else 0.0
                    if work.ncell:
                        res = res - mult[:work.ncell] @ cell_a
                        const += float(mult[:work.ncell] @ cell_rhs)
                    bound = const + res @ centre + np.abs(res) @ half
                    for j in undecided[_below(bound, rhs_c[undecided])]:
                        dropped[j] = True
                        memo[names_c[j]] = _Memo(mu=mu_d, nu=nu_d)
                        counts["batch_drops"] += 1
                break
            d = to_y(x_star) - zy
            live = np.flatnonzero(~dropped & ~in_r)
            den = ay[live] @ d
            t = np.full(len(live), np.inf)
            pos = den > 0
            t[pos] = slack[live][pos] / den[pos]
            order = np.argsort(t)
            h = int(live[order[0]])
            t_h = t[order[0]]
            t_2 = t[order[1]] if len(order) > 1 else np.inf
            add(h)
            confirmed[h] = True
            t_w = 0.5 * (t_h + min(t_2, 1.0))
            memo[names_c[h]] = _Memo(witness=z_x + t_w * (x_star - z_x))
    # 4. hinted working sides without a witness today: an LP each, dropped if redundant
    for k in [k for k in seeds if not confirmed[k]]:
        work.relax(pos_of[k], None)
        out = work.maximise(ay[k])
        if out is not None and _below(out[0], rhs_c[k]):
            dropped[k] = True
            in_r[k] = False
            memo.pop(names_c[k], None)
        else:
            work.relax(pos_of[k], rhs_c[k])
            if out is not None:
                memo[names_c[k]] = _Memo(witness=out[1].copy())
    counts["lps"] += work.lps
    return in_r, memo


def screen_point(pkg: SensitivityPackage, i: int, lower: np.ndarray, upper: np.ndarray,
                 *, cache: ScreeningCache | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, str]], bool,
                            dict[str, int]]:
    """The sides of point ``i`` that can bind: ``(a, rhs, scale, names, feasible, counts)``."""
    a_raw, c, names = _sides(pkg, i)
    a, rhs, scale = normalise_sides(a_raw, c)
    total = len(rhs)
    # closed-form box bound without margin (flexcore.market.direct._keep_rows, one side)
    lo_box = np.asarray(lower, float)
    hi_box = np.asarray(upper, float)
    centre, half = 0.5 * (lo_box + hi_box), 0.5 * (hi_box - lo_box)
    box_max = a @ centre + np.abs(a) @ half
    keep = box_max > rhs + _DROP_TOL * (1.0 + np.abs(rhs))
    idx = np.flatnonzero(keep)
    a_c, rhs_c = a[idx], rhs[idx]
    pf = pkg.p_flex_mw
    others = [j for j in range(pkg.m) if j != i]
    d = np.array([pf[j] - pf[i] for j in others]).reshape(len(others), pkg.n)
    mid = np.array([0.5 * (pf[j] + pf[i]) for j in others]).reshape(len(others), pkg.n)
    # cell: (P_i - P_j)·x >= (P_i - P_j)·(P_i + P_j)/2  <=>  (P_j - P_i)·x <= (P_j - P_i)·mid
    cell_a = d
    cell_rhs = np.einsum("jn,jn->j", d, mid) if len(others) else np.zeros(0)
    nonzero = np.linalg.norm(cell_a, axis=1) > 0 if len(others) else np.zeros(0, bool)
    cell_a, cell_rhs = cell_a[nonzero], cell_rhs[nonzero]
    cell_labels = [pkg.points[j].label for j, nz in zip(others, nonzero) if nz]
    counts = {"sides_total": total, "sides_after_box": int(len(idx)), "lps": 0,
              "witness_confirmed": 0, "certificate_drops": 0, "batch_drops": 0}
    label = pkg.points[i].label
    names_c = [names[s] for s in idx]
    out = None
    if len(idx):
        hints = {} if cache is None else (cache.memo.get(label) or cache.memo.get("", {}))
        out = _screen_clarkson(a_c, rhs_c, names_c, cell_a, cell_rhs, cell_labels, lo_box,
                               hi_box, pf[i], hints, counts)
    if out is not None:
        kept, memo = out
        feasible = True
        if cache is not None:
            cache.memo[label] = cache.memo[""] = memo
    elif len(idx):
        kept, feasible, lps = _screen_sequential(a_c, rhs_c, box_max[idx], cell_a, cell_rhs,
                                                 lo_box, hi_box)
        counts["lps"] += lps
        if cache is not None:
            cache.memo.pop(label, None)
    else:
        kept, feasible = np.zeros(0, bool), True
        if len(cell_rhs):  # no candidate side: the region is box ∩ cell
            region = _RegionLP(np.zeros((0, pkg.n)), np.zeros(0), cell_a, cell_rhs, lo_box,
                               hi_box)
            feasible = region.feasible()
    if not feasible:
        counts["sides_kept"] = 0
        return (np.zeros((0, pkg.n)), np.zeros(0), np.zeros(0), [], False, counts)
    sel = idx[kept]
    counts["sides_kept"] = int(len(sel))
    return a[sel], rhs[sel], scale[sel], [names[s] for s in sel], True, counts


def harden(package: SensitivityPackage, *, lower_mw: npt.ArrayLike, upper_mw: npt.ArrayLike,
           rng: np.random.Generator | None = None, cache: ScreeningCache | None = None
           ) -> tuple[HardenedPackage, HardeningKey]:
    """The format-2 package of ``package`` for the bid box ``[lower_mw, upper_mw]`` (MW, in
    ``package.columns`` order) and its DSO-private key (module docstring).

    ``rng`` shuffles rows and columns (default: fresh OS entropy); the salt always comes
    from :mod:`secrets`, never from ``rng``. ``cache`` (DSO-private, kept between
    publications of one bid set) makes the screening incremental: its hints are re-checked
    on the current data, so the result is the same set of sides with or without it.
    """
    lower = np.asarray(lower_mw, float)
    upper = np.asarray(upper_mw, float)
    if lower.shape != (package.n,) or upper.shape != (package.n,):
        raise ValueError(f"lower_mw / upper_mw need shape ({package.n},), got {lower.shape} / "
                         f"{upper.shape}")
    totals = {"sides_total": 0, "sides_after_box": 0, "sides_kept": 0, "lps": 0,
              "witness_confirmed": 0, "certificate_drops": 0, "batch_drops": 0}
    if cache is not None:
        cache.use(package.columns)
    t0 = time.perf_counter()
    per_point, excluded = [], []
    for i in range(package.m):
        a, rhs, scale, names, feasible, counts = screen_point(package, i, lower, upper,
                                                              cache=cache)
        for k in totals:
            totals[k] += counts[k]
        if not feasible:
            excluded.append(i)
        per_point.append((a, rhs, scale, names))
    screening = {k: totals[k] for k in ("sides_total", "sides_after_box", "sides_kept")}
    return assemble_hardened(package, per_point, excluded=excluded, rng=rng,
                             screening=screening, totals=totals, t0=t0)


def assemble_hardened(package: SensitivityPackage,
                      per_point: list[tuple[np.ndarray, np.ndarray, np.ndarray,
                                            list[tuple[str, str]]]],
                      *, excluded: list[int], rng: np.random.Generator | None,
                      screening: dict[str, Any], totals: dict[str, Any], t0: float,
                      request_mw: float | None = None, shuffle_seed: int | None = None
                      ) -> tuple[HardenedPackage, HardeningKey]:
    """The format-2 package of the sides ``per_point[i] = (a, rhs, scale, names)`` (in
    ``package.columns`` order): rows and columns shuffled, and its DSO-private key.

    ``shuffle_seed`` (a secret, e.g. one per round of a frame: :class:`RequestRows`): the
    column order and each point's row order are drawn from it (from ``(seed, point)`` for
    the rows), so that the packages of one round published with that seed order their
    columns alike and repeat a point whose sides did not change as they were (the TSO
    can reuse its solve of that region: flexcore.market.direct.RegionCache); else from
    ``rng`` (default: fresh OS entropy)."""
    if shuffle_seed is not None:
        rng = np.random.default_rng([shuffle_seed, 0])
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    perm = rng.permutation(package.n)
    perm_list = perm.tolist()
    rows_a, rows_rhs, key_rows = [], [], []
    both_sides = 0
    for i, (a, rhs, scale, names) in enumerate(per_point):
        row_rng = rng if shuffle_seed is None else \
            np.random.default_rng([shuffle_seed, 1, i])
        order = row_rng.permutation(len(rhs))
        rows_a.append(a[order][:, perm] if len(rhs) else np.zeros((0, package.n)))
        rows_rhs.append(rhs[order])
        order_list = order.tolist()
        key_rows.append(tuple(PublishedRow(i, names[o][0], names[o][1], s)
                              for o, s in zip(order_list, scale[order].tolist())))
        keys_by_side: dict[str, set[str]] = {"upper": set(), "lower": set()}
        for kk, side in names:
            keys_by_side[side].add(kk)
        both_sides += len(keys_by_side["upper"] & keys_by_side["lower"])
    screening = {
        **screening,
        "points_excluded": len(excluded),
        # a row published with both sides leaks its base value through the ratio of the
        # two right-hand sides and the public limits (audit.recover_from_normalised_pairs)
        "rows_with_both_sides": both_sides,
    }
    hardened = HardenedPackage(
        privacy=PrivacyLevel.EXACT,
        columns=tuple([package.columns[j] for j in perm_list]),
        points=package.points,
        p_flex_mw=package.p_flex_mw[:, perm],
        rows_a=tuple(rows_a), rows_rhs=tuple(rows_rhs),
        excluded=tuple(excluded), screening=screening,
        undeliverable=package.undeliverable, request_mw=request_mw)
    key = HardeningKey(salt=secrets.token_hex(16), column_order=tuple(perm_list),
                       rows=tuple(key_rows), excluded=tuple(excluded),
                       report=screening | totals | {"time_s": time.perf_counter() - t0})
    return hardened, key


def balance_max(a: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: float
                ) -> np.ndarray:
    """Per row of ``a`` (r, n) the exact ``max a·x`` over the box ``lower <= x <= upper``
    with the balance ``sum(x) = total`` (a fractional knapsack: from ``x = lower``, fill
    the largest entries first); ``-inf`` rows when the balance is out of the box's reach.
    The bound the clearing's balance gives a side before any LP (README "Privacy")."""
    a = np.atleast_2d(np.asarray(a, float))
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    budget = float(total) - lo.sum()
    cap = hi - lo
    if budget < -1e-12 or budget > cap.sum() + 1e-12:
        return np.full(a.shape[0], -np.inf)
    order = np.argsort(-a, axis=1)
    a_s = np.take_along_axis(a, order, axis=1)
    c_s = cap[order]
    fill = np.clip(budget - (np.cumsum(c_s, axis=1) - c_s), 0.0, c_s)
    out: np.ndarray = a @ lo + (a_s * fill).sum(axis=1)
    return out


#: a row the clearing's activation exceeds by more than this (normalised) is added
_CUT_TOL = 1e-9


class RequestRows:
    """The rows of one request, published as they are needed (DSO-private state; the
    co-simulation's ``privacy = "exact"``; flexcore.exchange.hardened, "Rows for one
    request").

    Start: per point the sides already at or past their limit at ``x = 0`` (``rhs <= 0``)
    and the sides named in ``seed`` (``(row key, side)`` pairs cut in an earlier round of
    the frame). :meth:`cut` takes the TSO's clearing and adds sides of the selected point
    that its activation violates; :meth:`publish` makes the format-2
    package of the sides so far, with ``request_mw``. When a clearing violates no side of
    its point, it is feasible for the complete model of that region and optimal for a
    relaxation of every region, hence optimal for the complete model: the format-1 optimum.
    Every side is normalised and checked as in :func:`harden`; nothing is dropped by an LP.
    """

    def __init__(self, package: SensitivityPackage, *, request_mw: float,
                 seed: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
                 previous: RequestRows | None = None) -> None:
        """``previous``: the request rows of the frame's earlier round, whose products
        ``S_i @ P_i`` are reused for points whose matrices are the same memory (a
        refinement point written into the round-0 package's spare room)."""
        t0 = time.perf_counter()
        self.package, self.request_mw = package, float(request_mw)
        lim, pf = package.limits, package.p_flex_mw
        # per point the sides of _sides() without building them: A = [S; -S] per kind, c
        self.c: list[np.ndarray] = []
        self.selected: list[np.ndarray] = []
        self.names_: list[list[tuple[str, str]]] = []
        names = ([(k, "upper") for k in package.vm_rows] + [(k, "lower") for k in package.vm_rows]
                 + [(k, "upper") for k in package.loading_rows]
                 + [(k, "lower") for k in package.loading_rows])
        seeded = np.fromiter((nm in seed for nm in names), bool, len(names)) if seed \
            else np.zeros(len(names), bool)
        self._products: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(package.m):
            reused = previous._product(package, i) if previous is not None else None
            if reused is not None:
                sv, sl = reused
            elif pf[i].any():
                sv, sl = package.vtdf[i] @ pf[i], package.ltdf[i] @ pf[i]
            else:  # the zero point: S @ 0 is 0 (up to the sign of a zero, which no test sees)
                sv, sl = np.zeros(len(package.vm_rows)), np.zeros(len(package.loading_rows))
            self._products.append((sv, sl))
            vm, ld = package.vm_pu[i], package.loading_percent[i]
            c = np.concatenate([lim.vm_max_pu - vm + sv, vm - lim.vm_min_pu - sv,
                                lim.loading_max_percent - ld + sl,
                                ld - lim.loading_min_percent - sl])
            _, rhs, _ = normalise_sides(np.ones((len(c), 1)), c)  # rhs <= 0: at/past the limit
            self.c.append(c)
            self.selected.append((rhs <= 0.0) | seeded)
            self.names_.append(names)
        self.cuts = 0
        #: secret of this round's shuffles: its packages order columns alike and repeat
        #: the rows of points without new sides (:func:`assemble_hardened`)
        self._shuffle_seed = secrets.randbits(128)
        #: ``(row key, side)`` of the seed and of the sides added by :meth:`cut` (the seed
        #: of the frame's next round)
        self.cut_names: set[tuple[str, str]] = set(seed)
        self.time_s = time.perf_counter() - t0

    def _product(self, package: SensitivityPackage, i: int
                 ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(S_v @ P_i, S_l @ P_i)`` of point ``i`` of ``package`` when this object's
        package holds that point in the same memory with the same ``P_i``, else None.
        Both packages are alive, so the same address, shape and strides are the same
        (immutable) values."""
        old = self.package
        if i >= old.m or not np.array_equal(old.p_flex_mw[i], package.p_flex_mw[i]):
            return None
        for a, b in ((old.vtdf[i], package.vtdf[i]), (old.ltdf[i], package.ltdf[i])):
            if (a.ctypes.data != b.ctypes.data or a.shape != b.shape
                    or a.strides != b.strides):
                return None
        return self._products[i]

    def _rows(self, i: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sides ``idx`` of point ``i`` as ``(A, c)`` (the rows of :func:`_sides`)."""
        pkg = self.package
        v, n = len(pkg.vm_rows), pkg.n
        out = np.empty((len(idx), n))
        for lo, sens, sign in ((0, pkg.vtdf[i], 1.0), (v, pkg.vtdf[i], -1.0),
                               (2 * v, pkg.ltdf[i], 1.0),
                               (2 * v + len(pkg.loading_rows), pkg.ltdf[i], -1.0)):
            hit = (idx >= lo) & (idx < lo + sens.shape[0])
            out[hit] = sign * sens[idx[hit] - lo]
        return out, self.c[i][idx]

    def cut(self, point: int, activation_mw: np.ndarray, *, most: int | None = None) -> int:
        """Add the sides of ``point`` that ``activation_mw`` (``package.columns`` order)
        violates and that are not published yet (``most``: only that many, the most
        violated first); returns how many."""
        t0 = time.perf_counter()
        pkg, x = self.package, np.asarray(activation_mw, float)
        sv, sl = pkg.vtdf[point] @ x, pkg.ltdf[point] @ x
        value = np.concatenate([sv, -sv, sl, -sl])
        cand = np.flatnonzero((value > self.c[point]) & ~self.selected[point])
        new = cand[:0]
        if len(cand):  # the test of the published (normalised) form
            a, rhs, _ = normalise_sides(*self._rows(point, cand))
            excess = a @ x - rhs
            hit = excess > _CUT_TOL * (1.0 + np.abs(rhs))
            new = cand[hit]
            if most is not None and len(new) > most:
                new = new[np.argsort(-excess[hit], kind="stable")[:most]]
        self.selected[point][new] = True
        self.cut_names |= {self.names_[point][k] for k in new}
        self.cuts += int(len(new) > 0)
        self.time_s += time.perf_counter() - t0
        return int(len(new))

    def names(self) -> set[tuple[str, str]]:
        """``(row key, side)`` of every side published so far (any point)."""
        return {names[k] for names, sel in zip(self.names_, self.selected)
                for k in np.flatnonzero(sel)}

    def publish(self, *, rng: np.random.Generator | None = None
                ) -> tuple[HardenedPackage, HardeningKey]:
        """The format-2 package of the sides published so far, for ``request_mw``."""
        t0 = time.perf_counter()
        per_point = []
        for i, (names, sel) in enumerate(zip(self.names_, self.selected)):
            idx = np.flatnonzero(sel)
            a, rhs, scale = normalise_sides(*self._rows(i, idx))
            per_point.append((a, rhs, scale, [names[k] for k in idx]))
        total = sum(len(c) for c in self.c)
        kept = sum(int(sel.sum()) for sel in self.selected)
        screening = {"sides_total": total, "sides_kept": kept, "method": "request_rows",
                     "cuts": self.cuts}
        out = assemble_hardened(self.package, per_point, excluded=[], rng=rng,
                                screening=screening, totals={"lps": 0}, t0=t0,
                                request_mw=self.request_mw,
                                shuffle_seed=None if rng is not None else self._shuffle_seed)
        self.time_s += out[1].report["time_s"]
        return out
