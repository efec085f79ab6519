"""Reference solutions in pure NumPy/SciPy: least squares, a Newton/IRLS solver, saturated designs.

Independent of PyMC and of the engine, so a fit can be checked against them
(:mod:`mle_ppl._src.report.checks`):

- :func:`least_squares`: SVD of the column-equilibrated design, plus one refinement step;
- :class:`Problem`: log-likelihood, gradient and information of a Bernoulli/binomial (logit or
  probit link) or categorical (softmax) model with a linear predictor ``offset + X @ θ``;
- :func:`newton_reference`: maximises a :class:`Problem` by Newton's method from θ = 0;
- :func:`saturated`: the closed form (observed frequencies) when the design is saturated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

EPS = np.finfo(float).eps


def _softmax(v: np.ndarray) -> np.ndarray:
    z = v - np.max(v, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def link_inv(link: str, v: np.ndarray) -> np.ndarray:
    """The inverse link: sigmoid (``"logit"``), Φ (``"probit"``) or softmax (last axis)."""
    if link == "logit":
        return special.expit(v)
    if link == "probit":
        return special.ndtr(v)
    return _softmax(v)



@dataclass(frozen=True)
class LeastSquares:
    """Least-squares solution by SVD of the column-equilibrated design (array layer)."""

    coef: np.ndarray
    rss: float
    rank: int
    xtx_inv: np.ndarray  #: (X'X)^-1 (pseudo-inverse when rank deficient)
    singular_values: np.ndarray  #: of the equilibrated design


def least_squares(X: np.ndarray, z: np.ndarray, n_rows: int | None = None) -> LeastSquares:
    """Minimise ``||z - X b||²`` by SVD of ``X`` with unit-norm columns, plus one refinement step.

    Column equilibration makes the solution insensitive to column scales (10⁶ apart is common);
    the SVD handles near-collinearity and reports the numerical rank.

    Examples
    --------
    >>> X = np.c_[np.ones(4), [0.0, 1, 2, 3]]
    >>> least_squares(X, np.array([1.0, 3, 5, 7])).coef.round(12)
    array([1., 2.])
    """
    X = np.asarray(X, dtype=float)
    z = np.asarray(z, dtype=float)
    n, m = X.shape
    n = n if n_rows is None else n_rows  # rows of the original design when X is its R factor
    norms = np.linalg.norm(X, axis=0)
    d = np.where(norms > 0, norms, 1.0)
    Xs = X / d
    U, s, Vt = np.linalg.svd(Xs, full_matrices=False)
    rank = int(np.sum(s > s[0] * max(n, m) * EPS)) if s.size and s[0] > 0 else 0
    Ur, sr, Vr = U[:, :rank], s[:rank], Vt[:rank].T

    def solve(r):
        return Vr @ ((Ur.T @ r) / sr)

    bs = solve(z)
    bs = bs + solve(z - Xs @ bs)  # iterative refinement: recovers digits lost to conditioning
    coef = bs / d
    resid = z - X @ coef
    inv_s = (Vr / sr**2) @ Vr.T
    return LeastSquares(coef=coef, rss=float(resid @ resid), rank=rank,
                        xtx_inv=inv_s / np.outer(d, d), singular_values=s)


def _binary_terms(eta: np.ndarray, k: np.ndarray, trials: np.ndarray, link: str):
    """Per-observation log-likelihood (without log C(n, k)) and its first two eta-derivatives.

    Clipping-free: log p and log(1 − p) come from log-sum-exp (logit) or log Φ (probit).
    """
    if link == "logit":
        lp, lq = -np.logaddexp(0.0, -eta), -np.logaddexp(0.0, eta)
        p = special.expit(eta)
        d1 = k - trials * p
        d2 = -trials * p * special.expit(-eta)
    else:
        lp, lq = special.log_ndtr(eta), special.log_ndtr(-eta)
        lphi = -0.5 * eta**2 - 0.5 * math.log(2 * math.pi)
        lam1 = np.exp(lphi - lp)  # φ(η)/Φ(η)
        lam0 = np.exp(lphi - lq)  # φ(η)/Φ(−η)
        d1 = k * lam1 - (trials - k) * lam0
        d2 = -k * lam1 * (eta + lam1) - (trials - k) * lam0 * (lam0 - eta)
    # 0·log 0 = 0: an outcome with no trials in a class contributes nothing
    ll = np.where(k > 0, k * lp, 0.0) + np.where(trials - k > 0, (trials - k) * lq, 0.0)
    return ll, d1, d2


def _categorical_terms(eta: np.ndarray, y: np.ndarray):
    logp = eta - special.logsumexp(eta, axis=-1, keepdims=True)
    yi = y.astype(int)
    ll = logp[np.arange(len(yi)), yi]
    return ll, logp


@dataclass(frozen=True)
class NewtonResult:
    """Reference solution of a binary or categorical likelihood (array layer)."""

    theta: np.ndarray
    loglik: float
    info: np.ndarray  #: observed information (−Hessian) at ``theta``
    iterations: int
    converged: bool
    rank: int


class Problem:
    """Log-likelihood, gradient and information of a linear-predictor model, in NumPy.

    ``link`` is ``"logit"``, ``"probit"`` (binary/binomial outcomes ``y`` out of ``trials``; design
    ``X`` of shape (N, m)) or ``"softmax"`` (categorical ``y`` in 0..K-1; design (N, K, m)); the
    linear predictor is ``offset + X @ θ``. ``trials`` defaults to ones (Bernoulli, categorical).
    """

    def __init__(self, link: str, X: np.ndarray, offset: np.ndarray, y: np.ndarray,
                 trials: np.ndarray | None = None):
        self.link = link
        self.X = X
        self.c = offset
        self.y = y
        self.trials = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)

    def eta(self, theta):
        return self.c + self.X @ theta

    def evaluate(self, theta):
        eta = self.eta(theta)
        if self.link == "softmax":
            ll, logp = _categorical_terms(eta, self.y)
            p = np.exp(logp)
            onehot = np.zeros_like(p)
            onehot[np.arange(len(self.y)), self.y.astype(int)] = 1.0
            g = np.einsum("nkm,nk->m", self.X, onehot - p)
            Jp = np.einsum("nkm,nk->nm", self.X, p)
            info = np.einsum("nkm,nk,nkl->ml", self.X, p, self.X) - Jp.T @ Jp
            return float(np.sum(ll)), g, info
        ll, d1, d2 = _binary_terms(eta, self.y, self.trials, self.link)
        g = self.X.T @ d1
        info = (self.X * (-d2)[:, None]).T @ self.X
        return float(np.sum(ll)), g, info

    def loglik(self, theta):
        eta = self.eta(theta)
        if self.link == "softmax":
            return float(np.sum(_categorical_terms(eta, self.y)[0]))
        return float(np.sum(_binary_terms(eta, self.y, self.trials, self.link)[0]))


def _scaled_solve(info: np.ndarray, g: np.ndarray):
    diag = np.abs(np.diag(info))
    d = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    w, V = np.linalg.eigh(d[:, None] * info * d[None, :])
    keep = w > 1e-12 * max(float(np.max(np.abs(w))), 1e-300)
    a = (V[:, keep].T @ (d * g)) / w[keep]
    return d * (V[:, keep] @ a), int(np.sum(keep))


def newton_reference(problem: Problem, *, max_iter: int = 200,
                     start: np.ndarray | None = None) -> NewtonResult:
    """Maximise the log-likelihood by Newton's method (IRLS for the logit link) with halving.

    Independent of PyMC and of the engine: NumPy/SciPy only, starting from θ = 0 (or ``start``:
    the log-likelihood is concave, so its maximum does not depend on the start). Converged when
    the Newton decrement is below 1e-14 (then one more full step); the information is
    Jacobi-scaled and inverted by eigendecomposition (pseudo-inverse if singular).
    """
    m = problem.X.shape[-1]
    theta = np.zeros(m) if start is None else np.array(start, dtype=float)
    f, g, info = problem.evaluate(theta)
    converged = False
    rank0 = _scaled_solve(info, g)[1]  # rank of the design's information at θ = 0
    rank = m
    it = 0
    for it in range(1, max_iter + 1):
        step, rank = _scaled_solve(info, g)
        if rank < rank0:
            break  # fitted probabilities saturate: the information underflows (separation)
        dec = 0.5 * float(g @ step)
        t = 1.0
        while True:
            f_new = problem.loglik(theta + t * step)
            if np.isfinite(f_new) and f_new >= f - 64 * EPS * max(abs(f), 1.0):
                break
            t *= 0.5
            if t < 1e-12:
                break
        if t < 1e-12:
            break
        theta = theta + t * step
        f, g, info = problem.evaluate(theta)
        # Converged: tiny Newton decrement AND a step that no longer moves θ. Under separation the
        # decrement also vanishes (the log-likelihood tends to 0) while θ keeps running off.
        if dec < 1e-14 and t == 1.0:
            if np.max(np.abs(step), initial=0.0) <= 1e-6 * (1.0 + np.max(np.abs(theta))):
                converged = True
                break
        if np.max(np.abs(theta)) > 1e8:
            break
    return NewtonResult(theta=theta, loglik=f, info=info, iterations=it, converged=converged,
                        rank=rank)


def saturated(prob: Problem):
    """Closed form when the design has one parameter per free probability (groups of rows).

    Returns ``(theta, groups, freqs, finite)`` or None when the design is not saturated.
    """
    X, c = prob.X, prob.c
    n = X.shape[0]
    if prob.link == "softmax":
        K = X.shape[1]
        key = np.concatenate([c.reshape(n, -1), X.reshape(n, -1)], axis=1)
        free = K - 1
    else:
        K = 2
        key = np.concatenate([c[:, None], X], axis=1)
        free = 1
    m = X.shape[-1]
    uniq, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    G = len(uniq)
    if G * free != m:
        return None
    groups = [np.flatnonzero(inverse == g) for g in range(G)]
    groups.sort(key=lambda r: r[0])
    if prob.link == "softmax":
        C = np.eye(K) - 1.0 / K
        A = np.concatenate([C @ X[r[0]] for r in groups])
    else:
        A = np.stack([X[r[0]] for r in groups])
    if np.linalg.matrix_rank(A) != m:
        return None
    freqs = []
    for r in groups:
        if prob.link == "softmax":
            counts = np.bincount(prob.y[r].astype(int), minlength=K).astype(float)
            freqs.append(counts / counts.sum())
        else:
            freqs.append(float(np.sum(prob.y[r]) / np.sum(prob.trials[r])))
    if prob.link == "softmax":
        finite = all(np.all(f > 0) for f in freqs)
    else:
        finite = all(0 < f < 1 for f in freqs)
    if not finite:
        return np.full(m, np.nan), groups, freqs, False
    if prob.link == "softmax":
        C = np.eye(K) - 1.0 / K
        rhs = np.concatenate([C @ (np.log(f) - c[r[0]]) for r, f in zip(groups, freqs,
                                                                         strict=True)])
    else:
        inv = special.logit if prob.link == "logit" else special.ndtri
        rhs = np.array([inv(f) - c[r[0]] for r, f in zip(groups, freqs, strict=True)])
    theta = least_squares(A, rhs).coef
    return theta, groups, freqs, True


