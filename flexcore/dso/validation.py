"""AC check of a clearing: the DSO's prediction vs its AC power flow at the activation.

Statistics are :class:`~flexcore.exchange.limits.ErrorStats` (NaN for an empty set) and
the limit check is :func:`~flexcore.exchange.limits.violations`, as everywhere else.
Loadings are compared as magnitudes (docs/method.md "Validation").
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexcore.exchange.limits import ErrorStats, Limits, Violation, violations

_EMPTY = ErrorStats.of(())


@dataclass(frozen=True)
class ValidationReport:
    """MILP estimate vs AC power flow at one activation."""

    converged: bool
    message: str = ""
    vm: ErrorStats = _EMPTY  # predicted - AC voltage, p.u.
    loading: ErrorStats = _EMPTY  # |predicted| - |AC| loading, %
    violations: tuple[Violation, ...] = ()  # over every monitored row, worst first
    max_loading_percent: float = math.nan
    vm_min_pu: float = math.nan
    vm_max_pu: float = math.nan
    vm_errors: dict[str, float] = field(default_factory=dict)
    loading_errors: dict[str, float] = field(default_factory=dict)
    ac_vm_pu: dict[str, float] = field(default_factory=dict)
    ac_loading_percent: dict[str, float] = field(default_factory=dict)

    @classmethod
    def not_converged(cls, message: str) -> ValidationReport:
        return cls(converged=False, message=message)

    @classmethod
    def compare(cls, *, limits: Limits, vm_keys: Sequence[str], vm_pu: np.ndarray,
                loading_keys: Sequence[str], loading_percent: np.ndarray,
                predicted_vm_pu: Mapping[str, float],
                predicted_loading_percent: Mapping[str, float]) -> ValidationReport:
        """The report of an AC result (every monitored row, in key order) against the
        predicted rows (a subset of them, e.g. after screening)."""
        vpos = {k: i for i, k in enumerate(vm_keys)}
        lpos = {k: i for i, k in enumerate(loading_keys)}
        unknown = [k for k in list(predicted_vm_pu) if k not in vpos] + \
            [k for k in list(predicted_loading_percent) if k not in lpos]
        if unknown:
            raise ValueError(f"clearing names row key(s) unknown to the key map: {unknown[:5]}")
        return cls.compare_rows(
            limits=limits, vm_keys=vm_keys, vm_pu=vm_pu, loading_keys=loading_keys,
            loading_percent=loading_percent,
            vm_rows=np.fromiter((vpos[k] for k in predicted_vm_pu), np.int64,
                                len(predicted_vm_pu)),
            predicted_vm_pu=np.fromiter(predicted_vm_pu.values(), float, len(predicted_vm_pu)),
            loading_rows=np.fromiter((lpos[k] for k in predicted_loading_percent), np.int64,
                                     len(predicted_loading_percent)),
            predicted_loading_percent=np.fromiter(predicted_loading_percent.values(), float,
                                                  len(predicted_loading_percent)))

    @classmethod
    def compare_rows(cls, *, limits: Limits, vm_keys: Sequence[str], vm_pu: np.ndarray,
                     loading_keys: Sequence[str], loading_percent: np.ndarray,
                     vm_rows: np.ndarray, predicted_vm_pu: np.ndarray,
                     loading_rows: np.ndarray, predicted_loading_percent: np.ndarray
                     ) -> ValidationReport:
        """:meth:`compare` with the predictions as arrays: ``predicted_vm_pu[k]`` is the
        estimate of row ``vm_keys[vm_rows[k]]`` (distinct rows), likewise for loadings."""
        vm, lp = np.asarray(vm_pu, float), np.asarray(loading_percent, float)
        vr, lr = np.asarray(vm_rows, np.int64), np.asarray(loading_rows, np.int64)
        vk = [vm_keys[r] for r in vr.tolist()]
        lk = [loading_keys[r] for r in lr.tolist()]
        ac_v, ac_l = vm[vr], lp[lr]
        ev = np.asarray(predicted_vm_pu, float) - ac_v
        el = np.abs(np.asarray(predicted_loading_percent, float)) - np.abs(ac_l)
        return cls(
            converged=True,
            vm=ErrorStats.of(ev), loading=ErrorStats.of(el),
            violations=tuple(violations(limits, vm_pu=vm, vm_keys=vm_keys, loading_percent=lp,
                                        loading_keys=loading_keys)),
            max_loading_percent=float(np.abs(lp).max()) if len(lp) else math.nan,
            vm_min_pu=float(vm.min()) if len(vm) else math.nan,
            vm_max_pu=float(vm.max()) if len(vm) else math.nan,
            vm_errors=dict(zip(vk, ev.tolist())), loading_errors=dict(zip(lk, el.tolist())),
            ac_vm_pu=dict(zip(vk, ac_v.tolist())),
            ac_loading_percent=dict(zip(lk, ac_l.tolist())),
        )

    # flat names (frames.csv, tables.json, the CLI report)
    @property
    def vm_mae_pu(self) -> float:
        return self.vm.mae

    @property
    def vm_rmse_pu(self) -> float:
        return self.vm.rmse

    @property
    def vm_max_abs_pu(self) -> float:
        return self.vm.max_abs

    @property
    def loading_mae_percent(self) -> float:
        return self.loading.mae

    @property
    def loading_rmse_percent(self) -> float:
        return self.loading.rmse

    @property
    def loading_max_abs_percent(self) -> float:
        return self.loading.max_abs

    @property
    def n_vm_rows(self) -> int:
        return self.vm.n

    @property
    def n_loading_rows(self) -> int:
        return self.loading.n

    @property
    def safe(self) -> bool:
        """AC converged and every limit kept."""
        return self.converged and not self.violations

    def accurate(self, *, tol_vm_mae_pu: float, tol_loading_mae_percent: float) -> bool:
        """AC converged and both MAEs within tolerance."""
        return self.converged and self.vm.within(tol_vm_mae_pu) \
            and self.loading.within(tol_loading_mae_percent)

    @property
    def max_violation(self) -> dict[str, Any] | None:
        return self.violations[0].as_dict() if self.violations else None

    def to_json(self) -> dict[str, Any]:
        return {"converged": self.converged, "message": self.message,
                "vm_mae_pu": self.vm_mae_pu, "vm_rmse_pu": self.vm_rmse_pu,
                "vm_max_abs_pu": self.vm_max_abs_pu,
                "loading_mae_percent": self.loading_mae_percent,
                "loading_rmse_percent": self.loading_rmse_percent,
                "loading_max_abs_percent": self.loading_max_abs_percent,
                "n_vm_rows": self.n_vm_rows, "n_loading_rows": self.n_loading_rows,
                "violations": [v.as_dict() for v in self.violations],
                "max_loading_percent": self.max_loading_percent,
                "vm_min_pu": self.vm_min_pu, "vm_max_pu": self.vm_max_pu,
                "vm_errors": self.vm_errors, "loading_errors": self.loading_errors,
                "ac_vm_pu": self.ac_vm_pu, "ac_loading_percent": self.ac_loading_percent,
                "safe": self.safe, "max_violation": self.max_violation}

    def as_text(self) -> str:
        if not self.converged:
            return f"AC power flow did not converge: {self.message}"
        mv = self.violations[0] if self.violations else None
        return (f"voltages: MAE {self.vm_mae_pu:.2e} p.u., RMSE {self.vm_rmse_pu:.2e} p.u. "
                f"({self.n_vm_rows} rows)\n"
                f"loadings: MAE {self.loading_mae_percent:.2e} %, RMSE "
                f"{self.loading_rmse_percent:.2e} % ({self.n_loading_rows} rows)\n"
                f"AC limits: " + ("all kept" if mv is None else
                                  f"{len(self.violations)} violated, worst {mv.kind} "
                                  f"{mv.key} = {mv.value:.4f} (limit {mv.limit})"))
