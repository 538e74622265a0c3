"""DSO-side privacy audit: play the attacker on a sensitivity package before publishing it.

Every attack is a function of the package alone (``attack_*``: what a TSO, or anybody who
gets the folder, can compute) and returns its guess. The scoring (``_score_*``) compares
the guess with the DSO's private truth: the grid model and the key map. :func:`audit`
runs them all and returns an :class:`AuditReport` (text table, JSON, policy verdict).

Attacks
-------
``downstream_sets``
    Threshold each LTDF row at half its largest magnitude: the bids downstream of the
    branch (radial grids; on a meshed grid only bridges have a downstream set).
``tree_links`` / ``transformer_areas``
    The guessed sets nest: each set's smallest strict superset is its parent (the feeder
    tree); the maximal sets are the transformer areas.
``edges``
    Incidence: the LTDF row of branch (a, b) is nearly parallel to VTDF row a - VTDF row b
    (resistive network: dL/dP_j ~ (R_aj - R_bj) / r_ab). Works on meshed grids too.
``own_bus`` / ``colocated``
    The largest VTDF entry of a column is the bid's own bus; identical columns share a bus.
``subtrees``
    Single-linkage clustering on the shared-path matrix ``S_ij = VTDF[bus(i), j]`` (the
    resistance of the common path to the source: an ultrametric on a tree).
``loads_within_10pct`` / ``loads_vdrop_within_10pct``
    ``|L_r| / |LTDF_rj|`` on single-bid rows is the building's apparent load; the voltage
    drop to the parent bus over the VTDF difference gives its active load.
``ratings_within_10pct``
    ``100 / |LTDF_rj|`` is the branch rating as an equivalent MVA (``sqrt(3) V I_r`` or a
    transformer's ``sn_mva``), snapped to a cable / transformer catalogue. Needs no base
    values.
``id_leaks`` / ``feeder_order`` / ``row_counts`` / ``salt_rows``
    Column ids naming the building or bus; columns in feeder order (tree-hop distance of
    consecutive columns vs random orders); row counts (v buses, l branches, l = v - 1 means
    radial); guessable key salts (rebuild ``v``/``l`` keys as bus / branch ids).

Format 2 (rows ``a x <= rhs`` normalised, no base values, no keys):

``loads_pairs_within_10pct``
    Two published rows with ``a_2 = -q a_1`` (q > 0, both inside) are the two sides of one
    row: with the public limits (:data:`PUBLIC_LOADING_LIMITS`) ``q`` gives its base value
    and sensitivity back (:func:`recover_from_normalised_pairs`), then the base-value load
    attack runs on the recovered rows.
``loads_catalogue_within_10pct`` / ``ratings_within_10pct``
    A single-bid row inside its limit has ``1/|a| = R -+ S``: the nearest catalogue rating
    is the guess for R, ``|1/|a| - R|`` for the load S.
``audit_frames`` (a day of packages, column ids stable over the frames)
    Single-bid rows matched over the frames by bid and sign; a frame publishing both sides
    gives the row's sensitivity, then every frame's one-sided row gives that frame's
    loading (:func:`attack_loads_across_frames`).
``colocated``
    Identical columns (bids at one connection point) stay identical in format 2.
With the DSO's hardening key, :func:`binding_bounds` gives what the attacks must stay
under: the bids behind published loading rows, the distinct rows published.

Packages without base values (``vm_pu`` and ``loading_percent`` all zero) are audited too:
the base-value attacks report that they cannot run. Rows normalised to ``a x <= 1`` (the
next format) leak the base values back when both sides of a row are published:
:func:`recover_from_normalised_pairs` implements that attack.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import linkage
from scipy.sparse.csgraph import shortest_path
from scipy.spatial.distance import squareform

from flexcore.errors import FlexcosimError, InputFileError
from flexcore.exchange.package import SensitivityPackage, load_package
from flexcore.exchange.points import PointInfo


class AuditError(FlexcosimError, ValueError):
    """A policy or key map the audit cannot use (the message names the key or file)."""


#: salts an attacker tries without being told: empty, the ones in the public code
#: (scenarios/evaluate.py, bench/run_all.py) and the co-simulation's ``bergwald-{seed}``
DEFAULT_SALT_GUESSES = ("", "evaluate", "bench") + tuple(f"bergwald-{s}" for s in range(101))
BRANCH_ELEMENTS = ("line", "trafo", "trafo3w", "impedance")
#: equivalent ratings (MVA) an attacker snaps to: sqrt(3) * vn * max_i_ka of pandapower's
#: standard lines at 0.4 / 10 / 20 kV, and the standard transformers' sn_mva
_SNAP_TOL = 0.12


# =========================================================================== results
@dataclass(frozen=True)
class Score:
    """One attack's result: ``count`` of ``total`` items recovered."""

    key: str
    attack: str
    count: int
    total: int
    detail: str = ""
    applicable: bool = True

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fraction"] = self.fraction
        return d


@dataclass(frozen=True)
class AuditReport:
    """All scores, the package's shape and the policy verdict (passed, failing lines)."""

    package: dict[str, Any]
    scores: tuple[Score, ...]
    policy: dict[str, Any] = field(default_factory=dict)
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    def score(self, key: str) -> Score:
        for s in self.scores:
            if s.key == key:
                return s
        raise KeyError(f"no score {key!r}; known: {[s.key for s in self.scores]}")

    def __getitem__(self, key: str) -> Score:
        return self.score(key)

    def as_dict(self) -> dict[str, Any]:
        return {"package": self.package, "scores": {s.key: s.as_dict() for s in self.scores},
                "policy": self.policy, "passed": self.passed, "failures": list(self.failures)}

    def as_text(self) -> str:
        p = self.package
        if "rows" in p:  # format 2
            shape = (f"package (format 2, {p['privacy']}): {p['n']} columns, "
                     f"{'/'.join(map(str, p['rows'])) or 'no'} rows per point (mixed)")
        else:
            shape = (f"package: {p['n']} columns, {p['v']} voltage rows, {p['l']} loading rows")
        head = (f"{shape}, {p['m']} point(s); base values "
                f"{'published' if p['base_values'] else 'absent'}"
                + (f"; screened ({p['screening']})" if p.get("screening") else ""))
        rows = [("attack", "score", "leaked", "detail")]
        for s in self.scores:
            if not s.applicable:
                rows.append((s.attack, s.key, "n/a", s.detail))
            else:
                rows.append((s.attack, s.key, f"{s.count}/{s.total} ({100 * s.fraction:.0f} %)",
                             s.detail))
        w = [max(len(r[k]) for r in rows) for k in range(3)]
        lines = [head, ""]
        for i, r in enumerate(rows):
            lines.append(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]}".rstrip())
            if i == 0:
                lines.append("-" * (sum(w) + 6 + 6))
        if self.policy:
            lines.append("")
            lines.append("policy: " + ("PASSED" if self.passed else "FAILED"))
            lines += [f"  {f}" for f in self.failures]
        return "\n".join(lines)


# =========================================================================== attacks
def rows_only(pkg: Any) -> bool:
    """True for format 2 (``flexcore.exchange.hardened.HardenedPackage`` or any object with
    ``columns``, ``p_flex_mw`` and per-point row matrices ``rows_a``): rows ``a x <= rhs``
    with voltage and loading rows mixed, no base values, no row keys."""
    return not isinstance(pkg, SensitivityPackage)


def has_base_values(pkg: Any) -> bool:
    """False for a package whose base values are absent (all zero, or format 2)."""
    if rows_only(pkg):
        return False
    return bool(np.any(pkg.loading_percent != 0) or np.any(pkg.vm_pu != 0))


def has_voltage_rows(pkg: Any) -> bool:
    """True when the package publishes voltage rows apart from loading rows (format 1)."""
    return not rows_only(pkg) and len(pkg.vm_rows) > 0


def _branch_rows(pkg: Any, point: int) -> np.ndarray:
    """The rows an attacker reads as branch rows: LTDF (format 1) or every published row of
    the point (format 2: voltage rows mixed in)."""
    if rows_only(pkg):
        return np.asarray(pkg.rows_a[point], float).reshape(-1, len(pkg.columns))
    return np.asarray(pkg.ltdf[point])


def attack_downstream_sets(pkg: SensitivityPackage, *, point: int = 0, threshold: float = 0.5,
                           floor: float = 1e-9) -> list[frozenset[int]]:
    """Per loading row, the columns whose |LTDF| is at least ``threshold`` x the row's
    largest (empty for an all-zero row)."""
    a = np.abs(_branch_rows(pkg, point))
    out = []
    for row in a:
        top = row.max() if row.size else 0.0
        out.append(frozenset(np.flatnonzero(row >= threshold * top).tolist())
                   if top > floor else frozenset())
    return out


def attack_set_tree(sets: Sequence[frozenset[int]]) -> tuple[dict[frozenset, frozenset | None],
                                                             list[frozenset]]:
    """Nested-set tree: each distinct non-empty set's smallest strict superset (None: a top
    set), and the maximal sets (areas)."""
    uniq = sorted({s for s in sets if s}, key=len)
    parent: dict[frozenset, frozenset | None] = {}
    for i, s in enumerate(uniq):
        parent[s] = next((t for t in uniq[i + 1:] if len(t) > len(s) and s < t), None)
    return parent, [s for s, p in parent.items() if p is None]


def attack_own_bus(pkg: SensitivityPackage, *, point: int = 0, tie_rtol: float = 2e-2
                   ) -> np.ndarray:
    """Per column, the voltage row with the largest |VTDF| (the bid's own bus). Buses
    downstream of the bid's bus share that value (the common path is the same): among rows
    within ``tie_rtol`` of the maximum the one with the smallest row sum (the most upstream)
    is taken. The tolerance covers the AC excess of the downstream buses (~1 % in a SimBench
    LV grid: 21/41 buses found at 1e-3, 38/41 at 2e-2; Bergwald 241/241 either way)."""
    if not has_voltage_rows(pkg):
        return np.full(len(pkg.columns), -1)
    vt = np.abs(pkg.vtdf[point])
    rowsum = vt.sum(axis=1)
    top = vt.max(axis=0)
    out = np.empty(pkg.n, dtype=int)
    for j in range(pkg.n):
        cand = np.flatnonzero(vt[:, j] >= top[j] * (1 - tie_rtol))
        out[j] = cand[np.argmin(rowsum[cand])]
    return out


def attack_colocated(pkg: SensitivityPackage, *, point: int = 0, rtol: float = 1e-9
                     ) -> list[list[int]]:
    """Groups (size >= 2) of columns with identical VTDF and LTDF columns."""
    if rows_only(pkg):
        cols = _branch_rows(pkg, point).T  # (n, r): rows mixed, normalised
    else:
        cols = np.vstack([pkg.vtdf[point], pkg.ltdf[point]]).T  # (n, v + l)
    if not cols.shape[1]:  # no rows (an envelope): nothing to compare
        return []
    scale = np.abs(cols).max() or 1.0
    q = np.round(cols / (scale * rtol * 10)).astype(np.int64)
    _, inv = np.unique(q, axis=0, return_inverse=True)
    groups: dict[int, list[int]] = {}
    for j, g in enumerate(np.ravel(inv)):
        groups.setdefault(int(g), []).append(j)
    return [g for g in groups.values() if len(g) > 1]


def shared_path_matrix(pkg: SensitivityPackage, own_rows: np.ndarray | None = None, *,
                       point: int = 0) -> np.ndarray:
    """``S_ij = (VTDF[bus(i), j] + VTDF[bus(j), i]) / 2``: the common path to the source."""
    own = attack_own_bus(pkg, point=point) if own_rows is None else own_rows
    s = np.abs(pkg.vtdf[point])[own, :]  # row i: own bus of bid i
    return 0.5 * (s + s.T)


def attack_subtrees(pkg: SensitivityPackage, *, point: int = 0) -> set[frozenset[int]]:
    """Single-linkage clusters of the columns on the shared-path matrix (all merge sets)."""
    n = len(pkg.columns)
    if n < 2 or not has_voltage_rows(pkg):
        return set()
    s = shared_path_matrix(pkg, point=point)
    d = s.max() - s
    np.fill_diagonal(d, 0.0)
    z = linkage(squareform(np.maximum(d, 0.0), checks=False), method="single")
    members: list[frozenset[int]] = [frozenset([j]) for j in range(n)]
    for a, b, *_ in z:
        members.append(members[int(a)] | members[int(b)])
    return set(members[n:])


def attack_edges(pkg: SensitivityPackage, *, point: int = 0, tie_rtol: float = 1e-6
                 ) -> list[tuple[tuple[int, int] | None, list[tuple[int, int]]]]:
    """Per loading row, the voltage-row pair (a, b) whose VTDF difference is most nearly
    parallel to the LTDF row, and all pairs tied with it (a chain without branching bids
    cannot be told apart). Ties are broken by the smallest ``|VTDF_a - VTDF_b|``. Empty
    without separate voltage rows (format 2)."""
    if not has_voltage_rows(pkg):
        return []
    vt = pkg.vtdf[point]
    g = vt @ vt.T
    dg = np.diag(g)
    ia, ib = np.triu_indices(len(dg), 1)
    d2 = dg[ia] + dg[ib] - 2.0 * g[ia, ib]
    ok = d2 > 1e-12 * (d2.max() if d2.size else 1.0)
    ia, ib, d2 = ia[ok], ib[ok], d2[ok]
    out: list[tuple[tuple[int, int] | None, list[tuple[int, int]]]] = []
    for row in pkg.ltdf[point]:
        nrm = np.linalg.norm(row)
        if nrm <= 1e-12 or not d2.size:
            out.append((None, []))
            continue
        p = vt @ (row / nrm)
        cos2 = (p[ia] - p[ib]) ** 2 / d2
        best = cos2.max()
        tied = np.flatnonzero(cos2 >= best - tie_rtol * max(best, 1e-300))
        pick = tied[np.argmin(d2[tied])]
        out.append(((int(ia[pick]), int(ib[pick])),
                    [(int(ia[t]), int(ib[t])) for t in tied]))
    return out


def attack_loads(pkg: SensitivityPackage, sets: Sequence[frozenset[int]] | None = None, *,
                 point: int = 0, differences: bool = True) -> dict[int, float]:
    """Column -> apparent load estimate (MVA) ``|L_r| / |LTDF_rj|`` on single-bid rows
    (the row with the largest |LTDF| when a bid has several); with ``differences`` also
    for a bid left alone by a row's set minus its child sets (the row's total minus the
    children's totals). Empty without base values."""
    if not has_base_values(pkg):
        return {}
    sets = attack_downstream_sets(pkg, point=point) if sets is None else sets
    best: dict[int, tuple[float, float]] = {}
    total: dict[frozenset, float] = {}  # guessed set -> apparent power behind the branch
    for r, s in enumerate(sets):
        if not s:
            continue
        sens = np.abs(pkg.ltdf[point, r, sorted(s)]).max()
        if sens <= 1e-12:
            continue
        est = abs(pkg.loading_percent[point, r]) / sens
        total.setdefault(s, est)
        if len(s) == 1:
            (j,) = s
            if j not in best or sens > best[j][0]:
                best[j] = (sens, est)
    out = {j: est for j, (_, est) in best.items()}
    if not differences:
        return out
    # a set minus its children's sets that leaves one bid: that bid's load by difference
    parent, _ = attack_set_tree(list(total))
    children: dict[frozenset, list[frozenset]] = {}
    for c, p in parent.items():
        if p is not None:
            children.setdefault(p, []).append(c)
    for s, t in total.items():
        kids = children.get(s, [])
        rest = s.difference(*kids) if kids else s
        if len(rest) == 1:
            (j,) = rest
            if j not in out:
                out[j] = t - sum(total[c] for c in kids)
    return out


def attack_loads_voltage_drop(pkg: SensitivityPackage,
                              sets: Sequence[frozenset[int]] | None = None, *, point: int = 0,
                              tie_rtol: float = 1e-6) -> dict[int, float]:
    """Column -> active load estimate (MW) from the voltage drop over the bid's service
    branch: ``(V_parent - V_own) / (VTDF_own,j - VTDF_parent,j)``. The service branch is a
    single-bid LTDF row; its far end is the voltage row x for which ``VTDF_own - VTDF_x`` is
    most nearly parallel to the row (the incidence attack restricted to the own bus)."""
    if not has_base_values(pkg) or not has_voltage_rows(pkg):
        return {}
    sets = attack_downstream_sets(pkg, point=point) if sets is None else sets
    vt = pkg.vtdf[point]
    vm = pkg.vm_pu[point]
    own = attack_own_bus(pkg, point=point)
    out: dict[int, float] = {}
    best: dict[int, float] = {}
    for r, s in enumerate(sets):
        if len(s) != 1:
            continue
        (j,) = s
        row = pkg.ltdf[point, r]
        sens = abs(row[j])
        if j in best and best[j] >= sens:
            continue
        o = own[j]
        d = vt[o][None, :] - vt  # (v, n)
        d2 = np.einsum("vn,vn->v", d, d)
        ok = d2 > 1e-12 * max(d2.max(), 1e-300)
        if not ok.any():
            continue
        cos2 = np.where(ok, (d @ row) ** 2 / np.where(ok, d2, 1.0), -1.0)
        top = cos2.max()
        cand = np.flatnonzero(cos2 >= top - tie_rtol * max(top, 1e-300))
        par = cand[np.argmin(d2[cand])]
        dv = abs(vt[o, j]) - abs(vt[par, j])
        if abs(dv) > 1e-15:
            best[j] = sens
            out[j] = float((vm[par] - vm[o]) / dv)
    return out


@functools.lru_cache(maxsize=1)
def rating_catalogue() -> np.ndarray:
    """Equivalent ratings (MVA) of pandapower's standard lines (0.4, 10, 20 kV) and
    transformers: what an attacker snaps a guessed rating to."""
    import pandapower as pp

    net = pp.create_empty_network()
    lines = pp.available_std_types(net, "line")
    vals = [math.sqrt(3) * vn * float(i) for vn in (0.4, 10.0, 20.0) for i in lines.max_i_ka]
    vals += [float(s) for s in pp.available_std_types(net, "trafo").sn_mva]
    return np.unique(np.round(vals, 6))


def attack_ratings(pkg: SensitivityPackage, sets: Sequence[frozenset[int]] | None = None, *,
                   point: int = 0, catalogue: np.ndarray | None = None) -> dict[int, float]:
    """Loading row -> guessed equivalent rating (MVA) ``100 / |LTDF_rj|`` at the row's
    largest entry (a downstream bid: dI/dP ~ 1 / (sqrt(3) V)), snapped to the catalogue
    when one entry lies within 12 %. Works without base values, not on normalised rows
    (format 2: the row scale is gone)."""
    if rows_only(pkg):
        return {}
    sets = attack_downstream_sets(pkg, point=point) if sets is None else sets
    cat = rating_catalogue() if catalogue is None else np.asarray(catalogue, float)
    out = {}
    for r, s in enumerate(sets):
        if not s:
            continue
        top = np.abs(pkg.ltdf[point, r]).max()
        raw = 100.0 / top
        if cat.size:
            k = np.argmin(np.abs(np.log(cat / raw)))
            if abs(math.log(cat[k] / raw)) <= _SNAP_TOL:
                raw = float(cat[k])
        out[r] = float(raw)
    return out


def normalise_rows(base: np.ndarray, sens: np.ndarray, *, lower: float, upper: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The next format's rows ``a x <= 1`` for both sides of ``lower <= base + sens x <=
    upper``: ``a_upper = sens / (upper - base)``, ``a_lower = -sens / (base - lower)``
    (rows: base (k,), sens (k, n)). Used to test :func:`recover_from_normalised_pairs`."""
    base = np.asarray(base, float)[:, None]
    sens = np.asarray(sens, float)
    return sens / (upper - base), -sens / (base - lower)


def recover_from_normalised_pairs(a_upper, a_lower, *, lower: float, upper: float
                                  ) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of a normalised row with public limits give the base value back.

    ``a_upper = S / (U - x)`` and ``a_lower = -S / (x - L)``, so ``q = -a_lower / a_upper =
    (U - x) / (x - L)`` (the same for every column) and ``x = L + (U - L) / (1 + q)``,
    ``S = a_upper (U - x)``. Returns (base (k,), sensitivities (k, n)); NaN base for an
    all-zero row.
    """
    au = np.atleast_2d(np.asarray(a_upper, float))
    al = np.atleast_2d(np.asarray(a_lower, float))
    if au.shape != al.shape:
        raise ValueError(f"row pairs differ in shape: {au.shape} vs {al.shape}")
    base = np.full(au.shape[0], np.nan)
    for k in range(au.shape[0]):
        nz = np.abs(au[k]) > 1e-15
        if nz.any():
            q = float(np.median(-al[k, nz] / au[k, nz]))
            base[k] = lower + (upper - lower) / (1.0 + q)
    sens = au * (upper - np.nan_to_num(base, nan=upper))[:, None]
    return base, sens


# --------------------------------------------------------------------------- format 2
#: the limits an attacker assumes public (flexcore.exchange.limits.Limits defaults): signed
#: loading -100..100 %, voltage 0.95..1.05 p.u.; both symmetric, so which published side is
#: the upper one does not change the recovered magnitudes
PUBLIC_LOADING_LIMITS = (-100.0, 100.0)


def _f2_rows(pkg: Any, point: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pkg.rows_a[point], float).reshape(-1, len(pkg.columns))
    return a, np.asarray(pkg.rows_rhs[point], float)


def attack_side_pairs(pkg: Any, *, point: int = 0, cos_tol: float = 1e-9
                      ) -> list[tuple[int, int, float]]:
    """Format 2: pairs of published rows of one point that are the two sides of one
    format-1 row (``a_2 = -q a_1``, q > 0, both inside their limit: rhs = 1). Returns
    ``(k1, k2, q)`` per pair."""
    a, rhs = _f2_rows(pkg, point)
    nrm = np.linalg.norm(a, axis=1)
    ok = np.flatnonzero((rhs == 1.0) & (nrm > 0))
    if ok.size < 2:
        return []
    u = a[ok] / nrm[ok, None]
    cos = u @ u.T
    out = []
    for x, y in zip(*np.nonzero(np.triu(cos <= -1.0 + cos_tol, 1))):
        k1, k2 = int(ok[x]), int(ok[y])
        out.append((k1, k2, float(nrm[k2] / nrm[k1])))
    return out


def recovered_pair_rows(pkg: Any, *, limits: tuple[float, float] = PUBLIC_LOADING_LIMITS
                        ) -> list[tuple[int, np.ndarray, float]]:
    """Format 2: every side pair of every point (:func:`attack_side_pairs`) read as a
    loading row with the public ``limits`` (:func:`recover_from_normalised_pairs`):
    ``(point, sensitivities (n,), base value)``, the format-1 row the pair came from (up to
    one common sign)."""
    lo, hi = limits
    out = []
    for i in range(len(pkg.rows_a)):
        a, _ = _f2_rows(pkg, i)
        for k1, k2, _q in attack_side_pairs(pkg, point=i):
            base, sens = recover_from_normalised_pairs(a[k1], a[k2], lower=lo, upper=hi)
            if np.isfinite(base[0]):
                out.append((i, sens[0], float(base[0])))
    return out


def attack_loads_pairs(pkg: Any) -> dict[int, float]:
    """Format 2: column -> apparent load (MVA) from the rows recovered out of both-side
    pairs with the public limits (:func:`recovered_pair_rows`), read as a format-1 package
    with base values and run through :func:`attack_loads` (single-bid rows and differences
    of nested sets), point by point; the first point's estimate of a bid is kept."""
    rec = recovered_pair_rows(pkg)
    out: dict[int, float] = {}
    n = len(pkg.columns)
    for i in sorted({r[0] for r in rec}):
        sens = np.array([r[1] for r in rec if r[0] == i])
        base = np.array([r[2] for r in rec if r[0] == i])
        keys = tuple(f"l{k}" for k in range(len(base)))
        view = SensitivityPackage(
            columns=tuple(pkg.columns), vm_rows=(), loading_rows=keys,
            points=(PointInfo("pairs"),), p_flex_mw=np.zeros((1, n)), vm_pu=np.zeros((1, 0)),
            loading_percent=base[None, :], vtdf=np.zeros((1, 0, n)), ltdf=sens[None, :, :])
        for j, est in attack_loads(view).items():
            out.setdefault(j, abs(est))
    return out


def attack_downstream_sets_of(rows: np.ndarray, *, threshold: float = 0.5,
                              floor: float = 1e-12) -> list[frozenset[int]]:
    """:func:`attack_downstream_sets` on a plain row matrix."""
    out = []
    for row in np.abs(np.atleast_2d(rows)):
        top = row.max() if row.size else 0.0
        out.append(frozenset(np.flatnonzero(row >= threshold * top).tolist())
                   if top > floor else frozenset())
    return out


def base_point(pkg: Any) -> int:
    """The published point nearest to no activation (public ``p_flex_mw``): its rows'
    intercepts are the frame's base values (activation fraction 0 in the defaults)."""
    return int(np.argmin(np.abs(np.asarray(pkg.p_flex_mw, float)).sum(axis=1)))


def _headrooms(pkg: Any) -> dict[tuple[int, int], float]:
    """Format 2: per (bid, sign of its entry) the headroom ``1 / max|a|`` (MVA under the
    loading hypothesis: ``R -+ S`` for a branch of rating R carrying load S) of the most
    sensitive single-bid row inside its limit at the :func:`base_point`."""
    out: dict[tuple[int, int], tuple[float, float]] = {}
    for i in ([base_point(pkg)] if len(pkg.rows_a) else []):
        a, rhs = _f2_rows(pkg, i)
        for k, s in enumerate(attack_downstream_sets_of(a)):
            if len(s) != 1 or rhs[k] != 1.0:
                continue
            (j,) = s
            top = float(a[k, j])
            key = (j, 1 if top > 0 else -1)
            if key not in out or abs(top) > out[key][0]:
                out[key] = (abs(top), 1.0 / abs(top))
    return {k: h for k, (_, h) in out.items()}


def _snap(value: float, cat: np.ndarray) -> float:
    return float(cat[np.argmin(np.abs(np.log(cat / value)))]) if cat.size else value


def attack_loads_catalogue(pkg: Any, *, catalogue: np.ndarray | None = None
                           ) -> tuple[dict[int, float], dict[int, float]]:
    """Format 2, one package: a single-bid row inside its limit has ``1 / max|a| = R -+ S``
    (rating R, load S, in MVA, with ``dL/dP ~ 100 / R``); R guessed as the nearest
    cable/transformer catalogue rating, S = ``|1/max|a| - R|``. Returns (column -> load
    estimate, column -> guessed rating of that row)."""
    cat = rating_catalogue() if catalogue is None else np.asarray(catalogue, float)
    loads: dict[int, float] = {}
    ratings: dict[int, float] = {}
    for (j, _sgn), h in _headrooms(pkg).items():
        r = _snap(h, cat)
        if j not in loads:
            loads[j], ratings[j] = abs(h - r), r
    return loads, ratings


def attack_loads_across_frames(packages: Sequence[Any], *,
                               catalogue: np.ndarray | None = None
                               ) -> list[dict[str, float]]:
    """Format 2, a day of packages of one publisher (column ids stable over the frames, as
    the co-simulation's per-run pseudonyms are): per frame, column id -> load estimate
    (MVA). A bid's single-bid rows are matched over the frames by (bid, sign of its entry).
    Where some frame publishes both sides of that row, the pair gives the row's sensitivity
    ``|s|`` exactly (with the public limits), and every other frame's one-sided row then
    gives its loading ``L_t = U - |s| / |a_t|`` (or ``L_min + |s| / |a_t|`` for the other
    sign, fixed by the pair): the load ``|L_t| / |s|``. Elsewhere the rating is guessed
    once for all frames as the catalogue value nearest the median headroom and
    ``S_t = |h_t - R|`` (:func:`attack_loads_catalogue`)."""
    cat = rating_catalogue() if catalogue is None else np.asarray(catalogue, float)
    lo, hi = PUBLIC_LOADING_LIMITS
    heads: list[dict[tuple[str, int], float]] = []
    exact: dict[tuple[str, int], float] = {}   # (bid id, sign of the upper side) -> |s|
    for pkg in packages:
        cols = list(pkg.columns)
        heads.append({(cols[j], sg): h for (j, sg), h in _headrooms(pkg).items()})
        for i, sens, _base in recovered_pair_rows(pkg):
            s = attack_downstream_sets_of(sens[None, :])[0]
            if len(s) == 1 and i == base_point(pkg):
                (j,) = s
                # the pair read with sens[j] on the upper side (either reading: same |L|)
                exact.setdefault((cols[j], 1 if sens[j] > 0 else -1), abs(float(sens[j])))
    keys = {k for h in heads for k in h}
    rating = {k: _snap(float(np.median([h[k] for h in heads if k in h])), cat) for k in keys}
    out: list[dict[str, float]] = []
    for h in heads:
        est: dict[str, float] = {}
        for (cid, sg), head in h.items():
            if (cid, sg) in exact:       # this sign is the upper side of the exact row
                s = exact[cid, sg]
                est[cid] = abs(hi - s * head) / s
            elif (cid, -sg) in exact:    # the lower side of it
                s = exact[cid, -sg]
                est[cid] = abs(lo + s * head) / s
            elif cid not in est:
                est[cid] = abs(head - rating[cid, sg])
        out.append(est)
    return out


_TOKEN = re.compile(r"[A-Za-z0-9]+")


def attack_id_tokens(pkg: SensitivityPackage) -> list[list[str]]:
    """Per column id, its alphanumeric tokens (what the attacker matches against names)."""
    return [_TOKEN.findall(c) for c in pkg.columns]


def attack_row_counts(pkg: SensitivityPackage) -> dict[str, Any]:
    """Row counts read as bus / branch counts; l = v - 1 claims a radial grid, one source."""
    v, l = len(pkg.vm_rows), len(pkg.loading_rows)
    return {"buses": v, "branches": l, "radial": l == v - 1}


def _key(prefix: str, salt: str, text: str) -> str:
    return prefix + hashlib.sha256(f"{salt}|{text}".encode()).hexdigest()[:10]


def attack_salt(pkg: SensitivityPackage, guesses: Iterable[str] = DEFAULT_SALT_GUESSES, *,
                max_index: int | None = None) -> tuple[str | None, dict[str, str]]:
    """Try each salt: rebuild the row keys of bus / branch indices 0..max_index. Returns the
    salt that rebuilds most keys and row key -> ``"bus:<b>"`` / ``"<element>:<i>"``.
    Nothing to rebuild in format 2 (no row keys)."""
    if rows_only(pkg):
        return None, {}
    vm_rows, ld_rows = set(pkg.vm_rows), set(pkg.loading_rows)
    if max_index is None:
        max_index = max(2048, 4 * (len(vm_rows) + len(ld_rows)))
    best: tuple[str | None, dict[str, str]] = (None, {})
    seen = set()
    for salt in guesses:
        if salt in seen:
            continue
        seen.add(salt)
        probe = min(max_index, 256)  # a right salt hits some low bus index
        if not any(_key("v", salt, f"bus:{b}") in vm_rows for b in range(probe)):
            continue
        found: dict[str, str] = {}
        for b in range(max_index):
            k = _key("v", salt, f"bus:{b}")
            if k in vm_rows:
                found[k] = f"bus:{b}"
        if not found:
            continue
        for e in BRANCH_ELEMENTS:
            for i in range(max_index):
                k = _key("l", salt, f"{e}:{i}")
                if k in ld_rows:
                    found[k] = f"{e}:{i}"
        if len(found) > len(best[1]):
            best = (salt, found)
    return best


# =========================================================================== truth
@dataclass
class _Truth:
    graph: nx.MultiGraph
    sources: list[int]
    bid_bus: np.ndarray                     # column -> bus
    vm_bus: np.ndarray                      # voltage row -> bus
    branches: list[tuple[str, int]]         # loading row -> branch
    ends: list[tuple[int, int]]             # loading row -> (bus, bus)
    downstream: list[frozenset[int] | None]  # loading row -> bids downstream (bridges)
    radial: bool
    n_buses: int
    n_branches: int


def _truth(net, keymap, pkg: Any) -> _Truth:
    """The DSO's truth for the package's rows; for format 2 (no row keys) over every bus and
    branch of the key map."""
    vm_keys = list(keymap.vm_pu) if rows_only(pkg) else list(pkg.vm_rows)
    ld_keys = list(keymap.loading_percent) if rows_only(pkg) else list(pkg.loading_rows)
    missing = [c for c in pkg.columns if c not in keymap.columns]
    missing += [k for k in vm_keys if k not in keymap.vm_pu]
    missing += [k for k in ld_keys if k not in keymap.loading_percent]
    if missing:
        raise AuditError(f"the key map does not describe this package (unknown key(s) "
                         f"{missing[:5]})")
    topo = _topology(net, keymap)
    bid_bus = np.array([keymap.columns[c] for c in pkg.columns], dtype=np.int64)
    bids_at: dict[int, list[int]] = {}
    for j, b in enumerate(bid_bus.tolist()):
        bids_at.setdefault(b, []).append(j)
    branches = [keymap.loading_percent[k] for k in ld_keys]
    ends = [topo.ends[(str(e), int(i))] for e, i in branches]
    downstream: list[frozenset[int] | None] = []
    cache: dict[frozenset, frozenset[int]] = {}
    for a, b in ends:
        e = frozenset((a, b))
        comp = topo.behind.get(e)
        if comp is None:
            downstream.append(None)
            continue
        if e not in cache:
            cache[e] = frozenset(j for bus in comp for j in bids_at.get(bus, ()))
        downstream.append(cache[e])
    return _Truth(graph=topo.graph, sources=list(topo.sources), bid_bus=bid_bus,
                  vm_bus=np.array([keymap.vm_pu[k] for k in vm_keys], dtype=np.int64),
                  branches=branches, ends=ends, downstream=downstream, radial=topo.radial,
                  n_buses=topo.n_buses, n_branches=topo.n_branches)


@dataclass(frozen=True)
class _Topology:
    """What :func:`_truth` needs of the grid's topology (the same for every package of a
    run while switches and branches stay as they are): the graph, the sources, the end
    buses of every key-map branch, per bridge the buses behind it (away from the sources)."""

    graph: Any
    sources: tuple[int, ...]
    ends: dict[tuple[str, int], tuple[int, int]]
    behind: dict[frozenset, frozenset[int]]
    radial: bool
    n_buses: int
    n_branches: int


#: the last topology computed: ``(fingerprint, _Topology)`` (audits of one run share it)
_TOPOLOGY_CACHE: list[tuple[Any, _Topology]] = []


def _topology_fingerprint(net, keymap) -> Any:
    """Everything :func:`_topology` reads: key-map buses and branches, branch end buses,
    switches, sources."""
    def cols(tab, names):
        return tuple(tuple(tab[c].tolist()) for c in names) if len(tab) else ()

    return (tuple(keymap.vm_pu.values()),
            tuple(tuple(v) for v in keymap.loading_percent.values()),
            tuple(cols(getattr(net, e), ends) for e, ends in _BRANCH_ENDS.items()
                  if e in net),
            cols(net.switch, ("bus", "element", "et", "closed")),
            cols(net.ext_grid, ("bus", "in_service")))


#: branch element -> its end-bus columns (as the audit reads them)
_BRANCH_ENDS = {"line": ("from_bus", "to_bus"), "impedance": ("from_bus", "to_bus"),
                "trafo": ("hv_bus", "lv_bus"), "trafo3w": ("hv_bus", "lv_bus")}


def _topology(net, keymap) -> _Topology:
    key = _topology_fingerprint(net, keymap)
    if _TOPOLOGY_CACHE and _TOPOLOGY_CACHE[0][0] == key:
        return _TOPOLOGY_CACHE[0][1]
    g = nx.MultiGraph()
    buses = sorted(set(keymap.vm_pu.values()))
    g.add_nodes_from(buses)

    def ends_of(e: str, i: int) -> tuple[int, int]:
        tab = getattr(net, e)
        if e not in _BRANCH_ENDS:
            raise ValueError(f"unknown branch element {e!r}")
        a, b = _BRANCH_ENDS[e]
        return int(tab.at[i, a]), int(tab.at[i, b])

    all_branches = list(keymap.loading_percent.values())
    ends = {(str(e), int(i)): ends_of(e, i) for e, i in all_branches}
    # a line behind an open line switch carries nothing: no edge (open rings are radial)
    open_lines: set[int] = set()
    if len(net.switch):
        sw = net.switch[(net.switch.et == "l") & ~net.switch.closed.astype(bool)]
        open_lines = {int(i) for i in sw.element}
    for e, i in all_branches:
        if e == "line" and int(i) in open_lines:
            continue
        a, b = ends[(str(e), int(i))]
        g.add_edge(a, b, key=(e, i))
    if len(net.switch):
        sw = net.switch[(net.switch.et == "b") & net.switch.closed]
        for bus, el in zip(sw.bus, sw.element):
            if int(bus) in g and int(el) in g:
                g.add_edge(int(bus), int(el), key=("switch", -1))
    sources = [int(b) for b in net.ext_grid.bus[net.ext_grid.in_service] if int(b) in g]
    simple = nx.Graph(g)
    mult: dict[frozenset, int] = {}
    for a, b in g.edges():
        mult[frozenset((a, b))] = mult.get(frozenset((a, b)), 0) + 1
    bridges = {frozenset(e) for e in nx.bridges(simple) if mult[frozenset(e)] == 1}
    behind: dict[frozenset, frozenset[int]] = {}
    for a, b in ends.values():
        e = frozenset((a, b))
        if e not in bridges or e in behind:
            continue
        simple.remove_edge(a, b)
        comp = nx.node_connected_component(simple, b)
        if any(s in comp for s in sources):
            comp = nx.node_connected_component(simple, a)
        simple.add_edge(a, b)
        behind[e] = frozenset(comp)
    n_edges = g.number_of_edges()
    radial = nx.is_forest(simple) and n_edges == simple.number_of_edges() \
        and nx.number_connected_components(simple) == max(1, len(sources))
    topo = _Topology(graph=g, sources=tuple(sources), ends=ends, behind=behind,
                     radial=bool(radial), n_buses=len(buses), n_branches=len(all_branches))
    _TOPOLOGY_CACHE[:] = [(key, topo)]
    return topo


def true_downstream_sets(net, keymap, package: Any) -> list[frozenset[int] | None]:
    """The DSO's truth: per loading row of a format-1 package (format 2: per branch of the
    key map), the columns downstream of the branch (None: not a bridge)."""
    return _truth(net, keymap, package).downstream


def _truth_loads(net, bid_bus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the net demand (P MW, |S| MVA) at the bid's bus in the base case (loads
    minus the grid's own generators; the DSO's activation sgens excluded)."""
    from flexcore.dso.linearizer import FLEX_SGEN_NAME

    def per_bus(tab, col):
        x = (tab[col] * tab["scaling"]).groupby(tab["bus"]).sum()
        return np.array([float(x.get(int(b), 0.0)) for b in bid_bus])

    ld = net.load[net.load.in_service]
    sg = net.sgen[net.sgen.in_service & (net.sgen.name != FLEX_SGEN_NAME)]
    p = per_bus(ld, "p_mw") - per_bus(sg, "p_mw")
    q = per_bus(ld, "q_mvar") - per_bus(sg, "q_mvar")
    return p, np.hypot(p, q)


def _truth_ratings(net, branches: list[tuple[str, int]]) -> np.ndarray:
    """Equivalent rating (MVA) per loading row: sqrt(3) vn I_max for lines, sn_mva for
    transformers."""
    out = np.full(len(branches), math.nan)
    kinds = [e for e, _ in branches]

    def col(tab, name, idx):
        return tab[name].loc[idx].to_numpy(float)

    for kind in set(kinds) & {"line", "trafo", "trafo3w"}:
        pos = [r for r, e in enumerate(kinds) if e == kind]
        idx = [int(branches[r][1]) for r in pos]
        if kind == "line":   # one element at a time, in the same order of operations
            vn = col(net.bus, "vn_kv", net.line.from_bus.loc[idx].to_numpy(np.int64))
            out[pos] = (math.sqrt(3) * vn * col(net.line, "max_i_ka", idx)
                        * col(net.line, "df", idx) * col(net.line, "parallel", idx))
        elif kind == "trafo":
            out[pos] = col(net.trafo, "sn_mva", idx) * col(net.trafo, "parallel", idx)
        else:
            out[pos] = col(net.trafo3w, "sn_lv_mva", idx)
    return out


# =========================================================================== scoring
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _score_downstream(sets, truth: _Truth) -> Score:
    idx = [r for r, t in enumerate(truth.downstream) if t is not None]
    hit = sum(1 for r in idx if sets[r] == truth.downstream[r])
    note = "" if truth.radial else f" (meshed: {len(idx)} bridge rows of {len(sets)})"
    return Score("downstream_sets", "LTDF rows -> downstream bid sets", hit, len(idx),
                 f"threshold at half the row maximum{note}", applicable=bool(idx))


def _score_tree(sets, truth: _Truth) -> tuple[Score, Score]:
    parent_g, areas_g = attack_set_tree(sets)
    true_sets = [t for t in truth.downstream if t]
    parent_t, _ = attack_set_tree(true_sets)
    hit = sum(1 for s, p in parent_t.items() if s in parent_g and parent_g[s] == p)
    tree = Score("tree_links", "nested sets -> feeder tree links", hit, len(parent_t),
                 f"{len(parent_g)} distinct guessed sets, {len(parent_t)} true",
                 applicable=bool(parent_t))
    true_areas = {truth.downstream[r] for r, (e, _) in enumerate(truth.branches)
                  if e in ("trafo", "trafo3w") and truth.downstream[r]}
    got = sum(1 for a in true_areas if a in set(areas_g))
    sizes = "/".join(str(len(a)) for a in sorted(areas_g, key=len, reverse=True)[:8])
    areas = Score("transformer_areas", "maximal sets -> transformer areas", got,
                  len(true_areas), f"maximal guessed sets: {sizes or '-'} bids",
                  applicable=bool(true_areas))
    return tree, areas


def _score_edges(edges, truth: _Truth, vm_bus: np.ndarray) -> Score:
    hit = tied = 0
    for (pick, ties), (a, b) in zip(edges, truth.ends):
        want = {a, b}
        if pick is not None and {int(vm_bus[pick[0]]), int(vm_bus[pick[1]])} == want:
            hit += 1
        if any({int(vm_bus[x]), int(vm_bus[y])} == want for x, y in ties):
            tied += 1
    return Score("edges", "LTDF ~ VTDF difference -> branch incidence", hit, len(edges),
                 f"true end buses among the best-fitting pairs for {tied}/{len(edges)}",
                 applicable=bool(edges))


def _score_own_bus(own, truth: _Truth) -> Score:
    n = len(truth.bid_bus)
    if not len(truth.vm_bus):
        return Score("own_bus", "VTDF column maximum -> own bus", 0, n, "no voltage rows",
                     applicable=False)
    hit = int(np.sum(truth.vm_bus[own] == truth.bid_bus))
    return Score("own_bus", "VTDF column maximum -> own bus", hit, n,
                 "largest |VTDF| per column (most upstream of the near-ties)")


def _score_colocated(groups, truth: _Truth) -> Score:
    true_pairs = {frozenset((i, j)) for i in range(len(truth.bid_bus))
                  for j in np.flatnonzero(truth.bid_bus == truth.bid_bus[i]) if j > i}
    guess_pairs = {frozenset((i, j)) for g in groups for i in g for j in g if j > i}
    hit = len(true_pairs & guess_pairs)
    return Score("colocated", "identical columns -> bids on one bus", hit, len(true_pairs),
                 f"{len(guess_pairs - true_pairs)} wrong pair(s) guessed",
                 applicable=bool(true_pairs))


def _score_subtrees(clusters, truth: _Truth) -> Score:
    true_sets = {t for t in truth.downstream if t is not None and len(t) >= 2}
    hit = len(true_sets & clusters)
    note = "" if truth.radial else " (meshed: subtrees behind bridges)"
    return Score("subtrees", "single-linkage on shared path -> multi-bid subtrees", hit,
                 len(true_sets), f"{len(clusters)} clusters{note}", applicable=bool(true_sets))


def _load_score(key, attack, est: dict[int, float], true: np.ndarray, base: bool,
                what: str) -> Score:
    n = len(true)
    if not base:
        return Score(key, attack, 0, n, "base values absent: cannot run "
                     "(normalised rows with both sides published: see "
                     "recover_from_normalised_pairs)", applicable=False)
    if not est:
        return Score(key, attack, 0, n, "no estimate")
    js = np.array(sorted(est))
    g = np.array([est[j] for j in js])
    t = np.abs(true[js])
    ok = t > 1e-9
    err = np.abs(np.abs(g[ok]) - t[ok]) / t[ok]
    hit = int(np.sum(err <= 0.10))
    corr = float(np.corrcoef(np.abs(g[ok]), t[ok])[0, 1]) if ok.sum() > 2 else math.nan
    return Score(key, attack, hit, n,
                 f"{len(js)} estimated ({what}); median error "
                 f"{_pct(float(np.median(err)) if err.size else math.nan)}, "
                 f"correlation {corr:.3f}")


def _score_ratings_by_set(guess: dict[int, float], net, truth: _Truth) -> Score:
    """Format 2: a rating guessed for bid j's single-bid row counts when some branch whose
    downstream set is {j} has that rating within 10 %."""
    rating = _truth_ratings(net, truth.branches)
    by_bid: dict[int, list[float]] = {}
    for r, d in enumerate(truth.downstream):
        if d is not None and len(d) == 1 and np.isfinite(rating[r]):
            by_bid.setdefault(next(iter(d)), []).append(float(rating[r]))
    hit = sum(1 for j, g in guess.items()
              if any(abs(g - t) <= 0.10 * t for t in by_bid.get(j, ())))
    return Score("ratings_within_10pct", "1/|a| + catalogue -> branch ratings", hit,
                 len(truth.branches), f"{len(guess)} single-bid rows rated")


def _score_ratings(guess: dict[int, float], truth_r: np.ndarray) -> Score:
    rows = [r for r in guess if np.isfinite(truth_r[r])]
    hit = sum(1 for r in rows if abs(guess[r] - truth_r[r]) <= 0.10 * truth_r[r])
    return Score("ratings_within_10pct", "100/|LTDF| + catalogue -> branch ratings", hit,
                 len(truth_r), f"{len(rows)} rows rated (needs no base values)")


def _score_ids(tokens, pkg: SensitivityPackage, net, truth: _Truth) -> Score:
    ld = net.load
    names_at: dict[int, list[str]] = {}
    for name, bus in zip(ld.name.astype(str), ld.bus):
        if name and name != "None":
            names_at.setdefault(int(bus), []).append(name)
    hit, example = 0, ""
    for j, (cid, toks) in enumerate(zip(pkg.columns, tokens)):
        bus = int(truth.bid_bus[j])
        by_name = any(re.search(r"(?<![A-Za-z0-9])" + re.escape(nm) + r"(?![A-Za-z0-9])", cid)
                      for nm in names_at.get(bus, ()))
        by_bus = any(re.fullmatch(rf"(?i)(bus|node|b|n)?0*{bus}", t) for t in toks)
        if by_name or by_bus:
            hit += 1
            example = example or f"e.g. {cid!r} -> bus {bus}"
    return Score("id_leaks", "column ids -> building / bus ids", hit, len(pkg.columns),
                 example or "no id names its building or bus")


def _hop_matrix(truth: _Truth) -> tuple[dict[int, int], np.ndarray]:
    nodes = list(truth.graph.nodes())
    pos = {b: k for k, b in enumerate(nodes)}
    rows, cols = [], []
    for a, b in truth.graph.edges():
        rows += [pos[a], pos[b]]
        cols += [pos[b], pos[a]]
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nodes), len(nodes)))
    uniq = np.unique(truth.bid_bus)
    d = shortest_path(adj, unweighted=True, indices=[pos[int(b)] for b in uniq])
    sub = d[:, [pos[int(b)] for b in uniq]]
    return {int(b): k for k, b in enumerate(uniq)}, sub


def _score_order(truth: _Truth, *, permutations: int = 200, seed: int = 0) -> Score:
    n = len(truth.bid_bus)
    if n < 3:
        return Score("feeder_order", "column order -> feeder order", 0, 1, "too few columns",
                     applicable=False)
    ix, d = _hop_matrix(truth)
    k = np.array([ix[int(b)] for b in truth.bid_bus])
    d = np.where(np.isfinite(d), d, np.nan)

    def med(order):
        return float(np.nanmedian(d[k[order[:-1]], k[order[1:]]]))

    obs = med(np.arange(n))
    rng = np.random.default_rng(seed)
    rand = np.array([med(rng.permutation(n)) for _ in range(permutations)])
    p = (1 + np.sum(rand <= obs)) / (1 + permutations)
    leaked = bool(p < 0.01 and obs < np.median(rand))
    return Score("feeder_order", "column order -> feeder order", int(leaked), 1,
                 f"median hops between consecutive columns {obs:g} vs {np.median(rand):g} "
                 f"for a random order (p = {p:.3f})")


def _score_rows(guess: dict[str, Any], truth: _Truth) -> Score:
    facts = [guess["buses"] == truth.n_buses, guess["branches"] == truth.n_branches,
             guess["radial"] == truth.radial]
    return Score("row_counts", "row counts -> bus/branch counts, radial", int(sum(facts)), 3,
                 f"v = {guess['buses']} ({truth.n_buses} buses), l = {guess['branches']} "
                 f"({truth.n_branches} branches), "
                 f"{'radial' if guess['radial'] else 'not radial'} claimed, grid is "
                 f"{'radial' if truth.radial else 'meshed'}")


def _score_salt(salt, found: dict[str, str], pkg: SensitivityPackage, keymap) -> Score:
    total = len(pkg.vm_rows) + len(pkg.loading_rows)
    hit = 0
    for k, label in found.items():
        if k in keymap.vm_pu:
            hit += label == f"bus:{keymap.vm_pu[k]}"
        elif k in keymap.loading_percent:
            e, i = keymap.loading_percent[k]
            hit += label == f"{e}:{i}"
    det = f"salt {salt!r} guessed" if salt is not None else "no guessed salt rebuilds a key"
    return Score("salt_rows", "guessed key salt -> row keys as bus/branch ids", hit, total, det)


# =========================================================================== policy
def load_policy(policy: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """A policy dict, or a TOML file (top-level keys or a ``[policy]`` table). Keys are
    ``max_<score>``: an int is a count limit, a float a fraction limit."""
    if policy is None:
        return {}
    if isinstance(policy, (str, Path)):
        path = Path(policy)
        if not path.is_file():
            raise InputFileError(f"policy file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise AuditError(f"{path}: not valid TOML ({exc})") from None
        policy = data.get("policy", data)
    if not isinstance(policy, Mapping):
        raise AuditError(f"policy must be a table of max_<score> = number, got {policy!r}")
    out = dict(policy)
    for k, v in out.items():
        if not k.startswith("max_") or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise AuditError(f"policy: {k!r} = {v!r}; expected max_<score> = number")
        if k[4:] not in SCORE_KEYS and k[4:] not in POLICY_ALIASES:
            raise AuditError(f"policy: unknown key {k!r}; known: "
                             f"{sorted('max_' + s for s in SCORE_KEYS + tuple(POLICY_ALIASES))}")
        if v < 0:
            raise AuditError(f"policy: {k} must be >= 0, got {v!r}")
    return out


#: every score an audit reports (policy keys are ``max_<key>``)
SCORE_KEYS = ("downstream_sets", "tree_links", "transformer_areas", "edges", "own_bus",
              "colocated", "subtrees", "loads_within_10pct", "loads_vdrop_within_10pct",
              "ratings_within_10pct", "id_leaks", "feeder_order", "row_counts", "salt_rows",
              "loads_pairs_within_10pct", "loads_catalogue_within_10pct")
#: the scores only a format-2 audit reports (attacks on normalised rows)
FORMAT2_SCORE_KEYS = ("loads_pairs_within_10pct", "loads_catalogue_within_10pct")
#: policy names for scores, besides ``max_<score key>``
POLICY_ALIASES = {"buses_identified": "own_bus", "loads": "loads_within_10pct",
                  "ids": "id_leaks", "rows_rebuilt": "salt_rows", "order": "feeder_order"}


def _apply_policy(policy: dict[str, Any], scores: tuple[Score, ...]) -> tuple[str, ...]:
    known = {s.key: s for s in scores}
    known.update({a: known[k] for a, k in POLICY_ALIASES.items() if k in known})
    unknown = sorted(k for k in policy if k[4:] not in known and k[4:] not in SCORE_KEYS
                     and k[4:] not in POLICY_ALIASES)
    if unknown:
        raise AuditError(f"policy: unknown key(s) {unknown}; known: "
                         f"{sorted('max_' + k for k in known)}")
    fails = []
    for k, limit in policy.items():
        s = known.get(k[4:])
        if s is None or not s.applicable:   # a score this package's format has no attack for
            continue
        if isinstance(limit, int):
            if s.count > limit:
                fails.append(f"{k}: {s.key} {s.count}/{s.total} recovered, policy allows "
                             f"{limit}")
        elif s.fraction > limit:
            fails.append(f"{k}: {s.key} {_pct(s.fraction)} recovered, policy allows "
                         f"{_pct(limit)}")
    return tuple(fails)


# =========================================================================== audit
def audit(package: SensitivityPackage | str | Path, *, net, keymap, bids=None,
          salt_guesses: Iterable[str] = (), policy: Mapping[str, Any] | str | Path | None = None,
          point: int = 0, order_permutations: int = 200, hardening_key=None) -> AuditReport:
    """Run every attack on the package and score it against the grid and key map.

    ``bids`` (a BidTable with buses, optional) is checked against the key map: the key map
    already holds each bid's bus. ``salt_guesses`` are tried before
    :data:`DEFAULT_SALT_GUESSES`. ``policy``: dict or TOML path (:func:`load_policy`).
    ``hardening_key`` (format 2, the DSO's :class:`flexcore.dso.privacy.HardeningKey`):
    adds the bounds the attacks must stay under to the report's ``package`` (bids behind
    the published loading rows, their distinct downstream sets).
    """
    pkg = _load(package) if isinstance(package, (str, Path)) else package
    pol = load_policy(policy)
    if bids is not None and bids.bus is not None:
        wrong = [b for b, bus in zip(bids.ids, bids.bus)
                 if b in keymap.columns and keymap.columns[b] != int(bus)]
        if wrong:
            raise AuditError(f"bid bus(es) differ from the key map for {wrong[:5]}")
    truth = _truth(net, keymap, pkg)
    if rows_only(pkg):
        return _audit_rows(pkg, net, truth, pol, order_permutations=order_permutations,
                           bounds=binding_bounds(pkg, hardening_key, keymap, net, truth)
                           if hardening_key is not None else None)
    base = has_base_values(pkg)

    sets = attack_downstream_sets(pkg, point=point)
    scores = [_score_downstream(sets, truth), *_score_tree(sets, truth)]
    scores.append(_score_edges(attack_edges(pkg, point=point), truth, truth.vm_bus))
    own = attack_own_bus(pkg, point=point)
    scores.append(_score_own_bus(own, truth))
    scores.append(_score_colocated(attack_colocated(pkg, point=point), truth))
    scores.append(_score_subtrees(attack_subtrees(pkg, point=point), truth))
    p_true, s_true = _truth_loads(net, truth.bid_bus)
    scores.append(_load_score("loads_within_10pct", "|L| / |LTDF| on single-bid rows -> loads",
                              attack_loads(pkg, sets, point=point), s_true, base,
                              "apparent power"))
    scores.append(_load_score("loads_vdrop_within_10pct",
                              "voltage drop / VTDF difference -> loads",
                              attack_loads_voltage_drop(pkg, sets, point=point), p_true, base,
                              "active power"))
    scores.append(_score_ratings(attack_ratings(pkg, sets, point=point),
                                 _truth_ratings(net, truth.branches)))
    scores.append(_score_ids(attack_id_tokens(pkg), pkg, net, truth))
    scores.append(_score_order(truth, permutations=order_permutations))
    scores.append(_score_rows(attack_row_counts(pkg), truth))
    guesses = tuple(salt_guesses) + DEFAULT_SALT_GUESSES
    scores.append(_score_salt(*attack_salt(pkg, guesses), pkg, keymap))
    scores_t = tuple(scores)
    info = {"m": pkg.m, "n": pkg.n, "v": len(pkg.vm_rows), "l": len(pkg.loading_rows),
            "base_values": base, "screening": _screen_note(pkg.screening)}
    return AuditReport(package=info, scores=scores_t, policy=pol,
                       failures=_apply_policy(pol, scores_t))


def _screen_note(screening: dict | None) -> str:
    if not screening:
        return ""
    if "vm_rows_kept" not in screening:  # format 2: counts under its own names
        return ", ".join(f"{k} {v}" for k, v in screening.items())
    return (f"{screening.get('vm_rows_kept')}/{screening.get('vm_rows_total')} voltage, "
            f"{screening.get('loading_rows_kept')}/{screening.get('loading_rows_total')} "
            "loading rows kept")


def _load(path: str | Path) -> Any:
    """The DSO reads its own packages of either format (format 1 behind ``allow_full``)."""
    return load_package(path, allow_full=True)


def _na(key: str, attack: str, total: int, why: str) -> Score:
    return Score(key, attack, 0, total, why, applicable=False)


def binding_bounds(pkg: Any, key, keymap, net, truth: _Truth | None = None
                   ) -> dict[str, int]:
    """What a format-2 package can reveal at most, from the DSO's hardening key: the bids
    downstream of its published loading rows (``loads_behind_binding_rows``), the distinct
    downstream sets of those rows (``downstream_sets_of_binding_rows``; bridges only on a
    meshed grid), the rows published with both sides (``loading_rows_with_both_sides``)
    and the distinct format-1 rows (voltage or loading) published at some point
    (``distinct_rows_published``: each yields at most one guessed set)."""
    truth = truth if truth is not None else _truth(net, keymap, pkg)
    pos = {k: r for r, k in enumerate(keymap.loading_percent)}
    behind: set[int] = set()
    sets: set[frozenset[int]] = set()
    both = 0
    distinct = {r.key for rows in key.rows for r in rows}
    for rows in key.rows:
        sides: dict[str, set[str]] = {}
        for r in rows:
            if r.key in pos:
                sides.setdefault(r.key, set()).add(r.side)
        for k, sd in sides.items():
            d = truth.downstream[pos[k]]
            both += len(sd) == 2
            if d:
                behind |= d
                sets.add(d)
    return {"loads_behind_binding_rows": len(behind),
            "downstream_sets_of_binding_rows": len(sets),
            "loading_rows_with_both_sides": both,
            "distinct_rows_published": len(distinct)}


def _audit_rows(pkg: Any, net, truth: _Truth, pol: dict[str, Any], *,
                order_permutations: int, bounds: dict[str, int] | None = None
                ) -> AuditReport:
    """Format 2: the attacks that need separate voltage rows, base values, the row scale or
    row keys report "not applicable"; the set attacks run on every published row of every
    point (voltage rows mixed in) and are scored set by set (there is no row to compare:
    a true downstream set counts as recovered when some published row yields it)."""
    m = len(pkg.rows_a)
    sets: list[frozenset[int]] = []
    groups: list[list[int]] = []
    for i in range(m):
        sets += attack_downstream_sets(pkg, point=i)
        groups += attack_colocated(pkg, point=i)
    guessed = {s for s in sets if s}
    true_sets = {t for t in truth.downstream if t}
    hit = len(true_sets & guessed)
    n, nrows = len(pkg.columns), [int(np.shape(a)[0]) for a in pkg.rows_a]
    no_v = "format 2: voltage rows are not told apart from loading rows"
    scores = [Score("downstream_sets", "published rows -> downstream bid sets", hit,
                    len(true_sets), f"{len(guessed - true_sets)} other set(s) guessed "
                    f"from {sum(nrows)} rows of {m} point(s)", applicable=bool(true_sets)),
              *_score_tree(sorted(guessed, key=len), truth),
              _na("edges", "LTDF ~ VTDF difference -> branch incidence", len(truth.ends), no_v),
              _na("own_bus", "VTDF column maximum -> own bus", n, no_v),
              _score_colocated(_merge_groups(groups, n), truth),
              _na("subtrees", "single-linkage on shared path -> multi-bid subtrees",
                  len(true_sets), no_v)]
    base_na = "base values absent: cannot run"
    p_true, s_true = _truth_loads(net, truth.bid_bus)
    cat_loads, cat_ratings = attack_loads_catalogue(pkg) if m else ({}, {})
    pairs = attack_loads_pairs(pkg) if m else {}
    scores += [_na("loads_within_10pct", "|L| / |LTDF| on single-bid rows -> loads", n, base_na),
               _na("loads_vdrop_within_10pct", "voltage drop / VTDF difference -> loads", n,
                   base_na),
               _score_ratings_by_set(cat_ratings, net, truth),
               _load_score("loads_pairs_within_10pct",
                           "both-side ratio + public limits -> loads", pairs, s_true, True,
                           f"apparent power; {len(recovered_pair_rows(pkg)) if m else 0} "
                           "side pairs found"),
               _load_score("loads_catalogue_within_10pct",
                           "1/|a| - catalogue rating -> loads", cat_loads, s_true, True,
                           "apparent power"),
               _score_ids(attack_id_tokens(pkg), pkg, net, truth),
               _score_order(truth, permutations=order_permutations),
               _na("row_counts", "row counts -> bus/branch counts, radial", 3,
                   f"rows mixed: {'/'.join(map(str, nrows)) or '0'} published per point"),
               _na("salt_rows", "guessed key salt -> row keys as bus/branch ids", 0,
                   "no row keys published")]
    scores_t = tuple(scores)
    privacy = getattr(pkg, "privacy", "exact")
    points = getattr(pkg, "points", None)  # an envelope publishes points but no rows
    info = {"m": len(points) if points is not None else m, "n": n, "v": 0, "l": 0,
            "rows": nrows, "format": 2,
            "privacy": str(privacy), "base_values": False,
            "screening": _screen_note(getattr(pkg, "screening", None)),
            **({"bounds": bounds} if bounds is not None else {})}
    return AuditReport(package=info, scores=scores_t, policy=pol,
                       failures=_apply_policy(pol, scores_t))


def _merge_groups(groups: Sequence[Sequence[int]], n: int) -> list[list[int]]:
    """Union of column groups found at several points (connected components)."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for grp in groups:
        g.add_edges_from(zip(grp[:-1], grp[1:]))
    return [sorted(c) for c in nx.connected_components(g) if len(c) > 1]


# =========================================================================== a day of packages
def bid_loads_mva(net, keymap, columns: Sequence[str]) -> dict[str, float]:
    """The DSO's truth for the load attacks: per column id, the apparent net demand (MVA)
    at the bid's bus in ``net``'s current fixed injections."""
    bus = np.array([keymap.columns[c] for c in columns], dtype=np.int64)
    return dict(zip(columns, _truth_loads(net, bus)[1].tolist()))


def audit_frames(packages: Sequence[Any], loads_mva: Sequence[Mapping[str, float]], *,
                 bounds: Sequence[Mapping[str, int]] = (), min_share: float = 0.5) -> Score:
    """The attacker holding a day of format-2 packages (:func:`attack_loads_across_frames`),
    scored against each frame's true loads (``loads_mva[t]``: column id -> MVA, e.g.
    :func:`bid_loads_mva`). A bid counts as recovered when its estimate is within 10 % in
    at least ``min_share`` of the frames that estimate it. ``bounds`` (per frame,
    :func:`binding_bounds`) puts the largest ``loads_behind_binding_rows`` of a frame into
    the detail."""
    if len(packages) != len(loads_mva):
        raise AuditError(f"{len(packages)} packages but {len(loads_mva)} frames of loads")
    est = attack_loads_across_frames(packages)
    hits: dict[str, list[bool]] = {}
    errs = []
    for e, true in zip(est, loads_mva):
        for cid, g in e.items():
            t = abs(float(true[cid]))
            if t > 1e-9:
                err = abs(abs(g) - t) / t
                errs.append(err)
                hits.setdefault(cid, []).append(err <= 0.10)
    got = sum(1 for h in hits.values() if np.mean(h) >= min_share)
    ids = {c for p in packages for c in p.columns}
    behind = max((int(b["loads_behind_binding_rows"]) for b in bounds), default=-1)
    return Score("loads_across_frames_within_10pct",
                 "a day of packages: rows matched over frames -> loads", got, len(ids),
                 f"{len(packages)} frames, {len(hits)} bids estimated, median error "
                 f"{_pct(float(np.median(errs)) if errs else math.nan)}"
                 + (f"; at most {behind} bids behind binding rows in a frame"
                    if behind >= 0 else ""))
