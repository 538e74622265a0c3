"""Why a request is infeasible: deliverable range, binding rows, base violations.

For every operating point's region the clearing constraints without the balance row are
solved twice (maximise and minimise total activation ``sum_j x_j``); an LP per region, or a
small MILP when bids are semi-continuous/indivisible. The union over regions is what the
TSO can get; the rows at their limit in the solution that reaches the extreme in the
request's direction are the bottleneck. For a format-2 package the rows are named by the
published row index, ``"<point label>#<k>"`` (row ``k`` of ``a_<i>``): the TSO knows no
more, the DSO maps them back with its hardening key.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from flexcore.exchange.clearing import Diagnosis
from flexcore.exchange.limits import IntArray
from flexcore.exchange.package import SensitivityPackage
from flexcore.market.direct import Prepared, region_program, solve_highs

_BIND_TOL = 1e-6


def base_violations(p: Prepared, tol: float = 1e-9) -> dict[str, list[str]]:
    """``{point label: [row keys]}`` whose value at the point itself (``dP = 0``) already
    violates a limit. A row the prefilter dropped is inside its limits over the whole bid
    box; a point outside the box is checked on every row of a format-1 package."""
    pkg = p.package
    out: dict[str, list[str]] = {}
    for i, pt in enumerate(pkg.points):
        if isinstance(pkg, SensitivityPackage):
            bad_v = pkg.limits.vm_violated(pkg.vm_pu[i], tol)
            bad_l = pkg.limits.loading_violated(pkg.loading_percent[i], tol)
            keys = [pkg.vm_rows[k] for k in np.flatnonzero(bad_v)]
            keys += [pkg.loading_rows[k] for k in np.flatnonzero(bad_l)]
        else:
            blk = p.blocks[i]
            bad = (blk.base < blk.lb - tol) | (blk.base > blk.ub + tol)
            keys = [p.row_keys[k] for k in blk.rows[bad]]
        if keys:
            out[pt.label] = keys
    return out


def diagnose(p: Prepared, *, mip_rel_gap: float = 1e-6,
             time_limit_s: float | None = None) -> Diagnosis:
    """Deliverable range over all regions and the rows limiting it (see module docstring)."""
    direction = 1.0 if p.request_mw >= 0 else -1.0
    ranges: list[list[Any]] = []
    best: tuple[float, int, IntArray] | None = None   # (direction * total, region, bound rows)
    lows: list[float] = []
    highs: list[float] = []
    for i, pt in enumerate(p.package.points):
        if i in p.excluded:
            ranges.append([pt.label, None, None])
            continue
        ext: dict[float, float | None] = {}
        for sense in (1.0, -1.0):   # +1: maximise total, -1: minimise total
            lp, nrow = region_program(p, i, cost=np.full(p.n, -sense), balance=False)
            out = solve_highs(lp, mip_rel_gap=mip_rel_gap, time_limit_s=time_limit_s)
            if out.x is None or out.row_activity is None:
                ext[sense] = None
                continue
            total = float(out.x[:p.n].sum())
            ext[sense] = total
            if sense == direction and (best is None or direction * total > best[0]):
                blk = p.blocks[i]
                act = out.row_activity[:nrow]
                lo, hi = lp.row_lo[:nrow], lp.row_hi[:nrow]
                # p.u. rows, percent rows; format-2 rows are normalised (rhs in {-1,0,1})
                scale = np.where(blk.is_vm | p.hardened, 1.0, 100.0)
                tol = _BIND_TOL * scale
                at = (np.abs(act - lo) <= tol) | (np.abs(act - hi) <= tol)
                best = (direction * total, i, blk.rows[at])
        hi_i, lo_i = ext[1.0], ext[-1.0]
        ranges.append([pt.label, lo_i, hi_i])
        if hi_i is not None:
            highs.append(hi_i)
        if lo_i is not None:
            lows.append(lo_i)
    base = base_violations(p)
    d = Diagnosis(message="", base_violated_rows=base, region_ranges=ranges,
                  max_deliverable_mw=max(highs) if highs else None,
                  min_deliverable_mw=min(lows) if lows else None)
    parts = []
    if best is None:
        parts.append("no region is feasible even without the balance requirement")
    else:
        d.binding_rows = [p.row_keys[k] for k in best[2]]
        extreme = d.max_deliverable_mw if direction > 0 else d.min_deliverable_mw
        lo_, hi_ = d.min_deliverable_mw, d.max_deliverable_mw
        if lo_ is not None and hi_ is not None and lo_ - 1e-9 <= p.request_mw <= hi_ + 1e-9:
            parts.append(f"request {p.request_mw:g} MW lies within [{lo_:g}, {hi_:g}] MW but in "
                         "no single region's deliverable set (gap between regions or "
                         "minimum-size/indivisible bids)")
        else:
            parts.append(f"request {p.request_mw:g} MW exceeds the deliverable "
                         f"{extreme:g} MW in its direction (range [{lo_:g}, {hi_:g}] MW)")
        if d.binding_rows:
            parts.append(f"limited by {len(d.binding_rows)} row(s) at their limit: "
                         f"{d.binding_rows[:5]}")
        else:
            parts.append("limited by the bids' volumes or the region boundaries, not by grid "
                         "limits")
    if base:
        parts.append("rows violating a limit already at the base of point(s) "
                     + ", ".join(f"{k}: {v[:5]}" for k, v in base.items()))
    d.message = "; ".join(parts)
    return d
