"""Solves with one sparse LU factorisation for a block of right-hand sides.

SuperLU's own ``solve`` handles a block column by column (about 1 GFlop/s for the 241 bid
buses of Bergwald, ~5 ms per sensitivity set). :class:`BlockLU` takes SuperLU's factors
(``A = Pr^T L U Pc^T``, scipy's convention; CSC) and runs both triangular solves over
the whole block with a compiled kernel (numba), so that the innermost loop runs along a
contiguous row of the block: the same
sums in another order (results agree with ``SuperLU.solve`` to rounding; tests/test_fastpf.py).
Without numba it falls back to ``SuperLU.solve``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla

try:  # numba is a dependency; the fallback keeps the module usable without it
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None


def _lu_solve_block(l_ptr, l_idx, l_val, u_ptr, u_idx, u_val, b):  # pragma: no cover
    """In place: ``b <- U^-1 L^-1 b``, L unit lower and U upper triangular in CSC (as
    SuperLU gives them, diagonals included), column-oriented: the innermost loop runs along
    a row of the C-ordered block."""
    n, k = b.shape
    for j in range(n):
        for p in range(l_ptr[j], l_ptr[j + 1]):
            i = l_idx[p]
            if i > j:
                v = l_val[p]
                for c in range(k):
                    b[i, c] -= v * b[j, c]
    for j in range(n - 1, -1, -1):
        d = 0.0
        for p in range(u_ptr[j], u_ptr[j + 1]):
            if u_idx[p] == j:
                d = u_val[p]
        for c in range(k):
            b[j, c] /= d
        for p in range(u_ptr[j], u_ptr[j + 1]):
            i = u_idx[p]
            if i < j:
                v = u_val[p]
                for c in range(k):
                    b[i, c] -= v * b[j, c]


_KERNEL = None if njit is None else njit(cache=True, nogil=True)(_lu_solve_block)


class BlockLU:
    """One factorisation of a square sparse matrix ``a`` (SuperLU, COLAMD) and
    :meth:`solve` for dense blocks of right-hand sides."""

    def __init__(self, a) -> None:
        self.lu = spla.splu(a)
        self._factors = None
        if _KERNEL is not None:
            lu = self.lu
            low, up = lu.L, lu.U   # CSC, diagonals included
            self._factors = (low.indptr, low.indices, low.data, up.indptr, up.indices,
                             up.data)

    def solve_unit(self, rows: np.ndarray, cols: np.ndarray, value: float, k: int
                   ) -> np.ndarray:
        """``a^-1 @ B`` for the ``(n, k)`` block ``B`` that is ``value`` at ``(rows[j],
        cols[j])`` and 0 elsewhere (unit injections), built straight in SuperLU's row
        order."""
        n = self.lu.shape[0]
        if self._factors is None:
            rhs = np.zeros((n, k))
            rhs[rows, cols] = value
            return self.lu.solve(rhs)
        b = np.zeros((n, k))
        b[self.lu.perm_r[rows], cols] = value   # Pr @ B
        _KERNEL(*self._factors, b)
        return b[self.lu.perm_c]

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``a^-1 @ rhs`` for a ``(n,)`` or ``(n, k)`` array."""
        if self._factors is None or rhs.ndim != 2:
            return self.lu.solve(rhs)
        lu = self.lu
        b = np.empty(rhs.shape)
        b[lu.perm_r] = rhs            # Pr @ rhs
        _KERNEL(*self._factors, b)
        return b[lu.perm_c]           # Pc @ y
