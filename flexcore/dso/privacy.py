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
"""
from __future__ import annotations

import secrets
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


def _normalise(a: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def screen_point(pkg: SensitivityPackage, i: int, lower: np.ndarray, upper: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, str]], bool,
                            dict[str, int]]:
    """The sides of point ``i`` that can bind: ``(a, rhs, scale, names, feasible, counts)``."""
    a_raw, c, names = _sides(pkg, i)
    a, rhs, scale = _normalise(a_raw, c)
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
    region = _RegionLP(a_c, rhs_c, cell_a, cell_rhs, lo_box, hi_box)
    counts = {"sides_total": total, "sides_after_box": int(len(idx))}
    if not region.feasible():
        counts["sides_kept"] = 0
        return (np.zeros((0, pkg.n)), np.zeros(0), np.zeros(0), [], False, counts)
    kept = np.ones(len(idx), bool)
    # tightest-looking rows last: loose rows are tested (and dropped) while the others hold
    for k in np.argsort(-(box_max[idx] - rhs_c)):
        value = region.maximum_without(int(k), a_c[k])
        if value is not None and value <= rhs_c[k] + _DROP_TOL * (1.0 + abs(rhs_c[k])):
            kept[k] = False
        else:
            region.keep(int(k))
    sel = idx[kept]
    counts["sides_kept"] = int(len(sel))
    return a[sel], rhs[sel], scale[sel], [names[s] for s in sel], True, counts


def harden(package: SensitivityPackage, *, lower_mw: npt.ArrayLike, upper_mw: npt.ArrayLike,
           rng: np.random.Generator | None = None) -> tuple[HardenedPackage, HardeningKey]:
    """The format-2 package of ``package`` for the bid box ``[lower_mw, upper_mw]`` (MW, in
    ``package.columns`` order) and its DSO-private key (module docstring).

    ``rng`` shuffles rows and columns (default: fresh OS entropy); the salt always comes
    from :mod:`secrets`, never from ``rng``.
    """
    lower = np.asarray(lower_mw, float)
    upper = np.asarray(upper_mw, float)
    if lower.shape != (package.n,) or upper.shape != (package.n,):
        raise ValueError(f"lower_mw / upper_mw need shape ({package.n},), got {lower.shape} / "
                         f"{upper.shape}")
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    perm = rng.permutation(package.n)
    rows_a, rows_rhs, key_rows, excluded = [], [], [], []
    totals = {"sides_total": 0, "sides_after_box": 0, "sides_kept": 0}
    both_sides = 0
    for i in range(package.m):
        a, rhs, scale, names, feasible, counts = screen_point(package, i, lower, upper)
        for k in totals:
            totals[k] += counts[k]
        if not feasible:
            excluded.append(i)
        order = rng.permutation(len(rhs))
        rows_a.append(a[order][:, perm])
        rows_rhs.append(rhs[order])
        sides = [names[o] for o in order]
        key_rows.append(tuple(PublishedRow(i, kk, side, float(scale[o]))
                              for (kk, side), o in zip(sides, order)))
        keys_by_side: dict[str, set[str]] = {"upper": set(), "lower": set()}
        for kk, side in names:
            keys_by_side[side].add(kk)
        both_sides += len(keys_by_side["upper"] & keys_by_side["lower"])
    screening = {
        **totals,
        "points_excluded": len(excluded),
        # a row published with both sides leaks its base value through the ratio of the
        # two right-hand sides and the public limits (audit.recover_from_normalised_pairs)
        "rows_with_both_sides": both_sides,
    }
    hardened = HardenedPackage(
        privacy=PrivacyLevel.EXACT,
        columns=tuple(package.columns[j] for j in perm),
        points=package.points,
        p_flex_mw=package.p_flex_mw[:, perm],
        rows_a=tuple(rows_a), rows_rhs=tuple(rows_rhs),
        excluded=tuple(excluded), screening=screening)
    key = HardeningKey(salt=secrets.token_hex(16), column_order=tuple(int(j) for j in perm),
                       rows=tuple(key_rows), excluded=tuple(excluded), report=screening)
    return hardened, key
