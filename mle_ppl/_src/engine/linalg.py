"""Small dense linear algebra of the optimizers: Jacobi-scaled eigendecomposition, TR step."""

from __future__ import annotations

import numpy as np


def scaled_eigh(H: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jacobi scaling ``d`` (unit diagonal of ``D H D``) and its eigendecomposition."""
    diag = np.abs(np.diag(H))
    scale = np.where(diag > 0, diag, 1.0)
    d = 1.0 / np.sqrt(scale)
    Hs = d[:, None] * H * d[None, :]
    Hs = 0.5 * (Hs + Hs.T)
    w, V = np.linalg.eigh(Hs)
    return d, w, V


def tr_step(gs: np.ndarray, w: np.ndarray, V: np.ndarray,
             radius: float) -> tuple[np.ndarray, bool]:
    """Trust-region step in scaled space: minimise the quadratic model within ``radius``.

    Returns the step and whether it is the plain Newton step (interior, positive definite).
    """
    a = V.T @ gs
    wmax = max(np.max(np.abs(w)), 1e-300)
    pd = w[0] > 1e-13 * wmax
    if pd:
        s = -(V @ (a / w))
        if np.linalg.norm(s) <= radius:
            return s, True
    # find lam >= max(0, -w_min) with ||s(lam)|| = radius (Moré-Sorensen in the eigenbasis)
    lo = max(0.0, -w[0]) + 1e-12 * wmax
    def norm_at(lam):
        return np.linalg.norm(a / (w + lam))
    if norm_at(lo) <= radius:
        lam = lo
    else:
        hi = lo + np.linalg.norm(a) / radius + wmax
        while norm_at(hi) > radius:
            hi *= 2
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if norm_at(mid) > radius:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-10 * hi:
                break
        lam = hi
    s = -(V @ (a / (w + lam)))
    return s, False


def central_hessian(grad, x: np.ndarray, rel_step: float) -> np.ndarray:
    """Symmetrised central differences of an exact gradient ``grad(x)``, step
    ``rel_step * max(1, |x_j|)`` per coordinate (2p gradient calls)."""
    x = np.asarray(x, dtype=float)
    p = len(x)
    H = np.empty((p, p))
    for j in range(p):
        h = rel_step * max(1.0, abs(x[j]))
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        H[:, j] = (grad(xp) - grad(xm)) / (2 * h)
    return 0.5 * (H + H.T)


def third_difference(L, z: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """``L(z+2v) - 3L(z+v) + 3L(z) - L(z-v)`` (0 for a quadratic) and the rounding scale."""
    vals = [L(z + 2 * v), L(z + v), L(z), L(z - v)]
    d3 = vals[0] - 3 * vals[1] + 3 * vals[2] - vals[3]
    return d3, sum(abs(a) for a in vals)


def quadratic_along(L, z: np.ndarray, v: np.ndarray) -> bool:
    """Whether the scalar function ``L`` is quadratic along ``v`` from ``z`` (four evaluations):
    its third difference vanishes to rounding."""
    with np.errstate(all="ignore"):
        d3, scale = third_difference(L, z, v)
    # rounding of a sum of n terms: ~n eps |L|; 1e-7 relative leaves a wide margin
    return bool(np.isfinite(d3) and abs(d3) <= 1e-7 * scale + 1e-10)
