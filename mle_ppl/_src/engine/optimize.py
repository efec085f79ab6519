"""Optimizers for the negative log-likelihood on the flat unconstrained vector.

Pure NumPy/SciPy. An optimizer sees an objective (:mod:`~mle_ppl._src.engine.objective`) and
uses only its ``value_and_grad(x)`` and ``hessian(x)``: ``optimizer(objective, x0, **options)``.
Sub-problems (a profile with one coordinate held fixed, a weighted bootstrap replicate) pass any
object with those two methods, e.g. :class:`~mle_ppl._src.engine.objective.Callables`.

``METHODS`` is the one registry of methods; ``fit(method=...)`` is validated against it.

- ``newton`` (default): trust-region Newton with the exact Hessian, Jacobi-scaled (unit diagonal)
  and solved by a symmetric eigendecomposition; once the Newton decrement is below tolerance it
  polishes the solution by iterative refinement with the last Hessian (only gradients are
  recomputed), which recovers accuracy lost to an ill-conditioned Hessian.
- ``lbfgs``: SciPy's L-BFGS-B on the Jacobi-scaled problem, with a tight gradient tolerance,
  finished by iterative refinement with the exact Hessian at its end point.
- ``gd``: plain gradient descent on the *mean* negative log-likelihood (per observation) with a
  fixed learning rate; for teaching, with its loss history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

EPS = np.finfo(float).eps


@dataclass(frozen=True)
class OptimResult:
    """What an optimizer returns: the point, how it got there, and whether it believes it."""

    x: np.ndarray
    fun: float
    grad: np.ndarray
    iterations: int
    n_evals: int
    converged: bool
    message: str
    method: str
    history: tuple[float, ...] = ()  #: objective after each iteration (gd: mean NLL per obs)
    hessian: np.ndarray | None = None  #: exact Hessian at ``x`` if the method computed it
    runaway: tuple[int, ...] = field(default=())  #: coordinates that ran off (|x| huge)


Progress = Callable[[int, float, float], None] | None


def _scaled_eigh(H: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jacobi scaling ``d`` (unit diagonal of ``D H D``) and its eigendecomposition."""
    diag = np.abs(np.diag(H))
    scale = np.where(diag > 0, diag, 1.0)
    d = 1.0 / np.sqrt(scale)
    Hs = d[:, None] * H * d[None, :]
    Hs = 0.5 * (Hs + Hs.T)
    w, V = np.linalg.eigh(Hs)
    return d, w, V


def _tr_step(gs: np.ndarray, w: np.ndarray, V: np.ndarray,
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


def _runaway(x, bounded, limit):
    """Bounded coordinates whose unconstrained value ran off (their estimate is at a bound)."""
    if bounded is None or not limit:
        return ()
    return tuple(int(i) for i in np.flatnonzero(np.asarray(bounded) & (np.abs(x) > limit)))


def _solve_1d(value_and_grad, x, i, f, g, max_expand=7):
    """Move coordinate ``i`` of ``x`` to a root of the partial derivative (bracket + Illinois).

    Used on log/interval-scale coordinates, where the NLL is exponential on one side: Newton
    crawls there (step ~0.5 per iteration) while a bracketed root search needs ~10 evaluations.
    ``f, g`` are the value and gradient at ``x``; returns the new ``(x, f, g)``.
    """
    if not np.isfinite(f) or g[i] == 0:
        return x, f, g
    direction = -np.sign(g[i])
    a, ga, fa_full, a_x = x[i], g[i], (f, g), x
    step = 1.0
    b = None
    gb = None
    for _ in range(max_expand):
        cand = a_x.copy()
        cand[i] = a + direction * step
        fc, gc = value_and_grad(cand)
        if not np.isfinite(fc):
            step *= 0.25
            continue
        if np.sign(gc[i]) != np.sign(ga):
            b, gb = cand[i], gc[i]
            break
        if fc > fa_full[0]:
            break
        a, ga, fa_full, a_x = cand[i], gc[i], (fc, gc), cand
        step *= 4.0
    if b is None:
        return a_x, *fa_full
    last = {}

    def gi(t):
        c = a_x.copy()
        c[i] = t
        fc, gc = value_and_grad(c)
        last[t] = (c, fc, gc)
        return gc[i]

    root = _illinois(gi, a, b, ga, gb, xtol=1e-3, maxiter=40, bisect_above=1.0)
    if root not in last:
        gi(root)
    found = last[root]
    # the NLL falls from a to the root along this coordinate; keep a if anything went wrong
    if np.isfinite(found[1]) and found[1] <= fa_full[0]:
        return found
    return a_x, *fa_full


def _illinois(fun, a, b, fa, fb, *, xtol, maxiter, bisect_above=np.inf):
    """Root of ``fun`` in the bracket ``[a, b]`` (``fa``, ``fb`` of opposite signs).

    Regula falsi with the Illinois modification (Dowell & Jarratt 1971), superlinear like the
    secant method while the root stays bracketed, and bisection while the bracket is wider than
    ``bisect_above`` or whenever three steps have not halved it (the derivative of an NLL in
    log sigma is exponential on one side, where a secant through a huge value crawls). It is
    all a warm start needs, and it keeps ``scipy.optimize`` (0.6 s to import) out of a fit.
    """
    side = 0
    c = a
    widths = [abs(b - a)]
    for _ in range(maxiter):
        if widths[-1] > bisect_above or (len(widths) > 3 and widths[-1] > 0.5 * widths[-4]):
            c = 0.5 * (a + b)
            widths = [abs(b - a)]
        else:
            c = (a * fb - b * fa) / (fb - fa)
            if not np.isfinite(c) or not min(a, b) <= c <= max(a, b):
                c = 0.5 * (a + b)
        fc = fun(c)
        if not np.isfinite(fc) or fc == 0:
            return c
        if np.sign(fc) == np.sign(fb):
            b, fb = c, fc
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a, fa = c, fc
            if side == 1:
                fb *= 0.5
            side = 1
        widths.append(abs(b - a))
        if widths[-1] <= xtol:
            break
    return c


def warm_start(value_and_grad, hessian, x0, bounded, rounds=1, start_value=None):
    """Block start: a Newton step on the free coordinates, then a 1-D root search on each
    bounded (scale) coordinate, ``rounds`` times. Returns ``(x, f, g)``.

    For a Gaussian model one round is: least squares for the coefficients (the Newton step in
    them does not depend on σ), then σ given them; for models without bounded parameters it
    returns ``x0`` unchanged.
    """
    x = np.array(x0, dtype=float)
    if start_value is not None and np.array_equal(start_value[0], x):
        f, g = start_value[1], start_value[2]  # the caller already evaluated this point
    else:
        f, g = value_and_grad(x)
    if bounded is None or not np.any(bounded) or not np.isfinite(f):
        return x, f, g
    idx_b = np.flatnonzero(bounded)[:20]
    free = ~np.asarray(bounded)
    for _ in range(rounds):
        if free.any():
            H = hessian(x)[np.ix_(free, free)]
            if np.all(np.isfinite(H)):
                d, w, V = _scaled_eigh(H)
                wmax = max(np.max(np.abs(w)), 1e-300)
                w = np.maximum(w, 1e-10 * wmax)
                step = d * -(V @ ((V.T @ (d * g[free])) / w))
                for _ in range(20):
                    cand = x.copy()
                    cand[free] += step
                    fc, gc = value_and_grad(cand)
                    if np.isfinite(fc) and fc < f:
                        x, f, g = cand, fc, gc
                        break
                    step *= 0.5
        for i in idx_b:
            x, f, g = _solve_1d(value_and_grad, x, i, f, g)
    return x, f, g


#: Newton decrement (predicted NLL decrease to the optimum) below which Newton stops taking
#: fresh Hessians: from there, steps with the last Hessian (a chord method, each accepted only
#: while it contracts) reach the optimum, and one fresh Hessian at the end certifies it.
NEAR = 1e-5


#: Refinement stops when the next step would change every coordinate by less than this,
#: relative to its magnitude (or to its scale ``1/sqrt(H_ii)`` near zero): the estimates are then
#: accurate to about 12 digits where the conditioning allows (NIST Longley: 11-12 digits), and
#: smaller steps cost a full data pass each for digits that rounding in the gradient's sum takes
#: away again.
POLISH_RTOL = 1e-12


def _polish(counted, x, f, g, d, w, V, max_steps):
    """Iterative refinement ``x <- x - H^{-1} g(x)`` with a fixed (scaled) Hessian, while it
    contracts (step norms at least halving). Returns the last accepted point.
    """
    prev = np.inf
    for _ in range(max_steps):
        ss = -(V @ ((V.T @ (d * g)) / w))
        snorm = np.linalg.norm(ss)
        if not snorm < 0.5 * prev or np.all(np.abs(d * ss) <= POLISH_RTOL * np.maximum(
                np.abs(x), d)):
            break
        x_new = x + d * ss
        f_new, g_new = counted(x_new)
        # Near the optimum the NLL (a sum of n terms) changes by less than its rounding
        # noise, so the step is judged by the gradient, which keeps full relative accuracy.
        if not np.isfinite(f_new) or (
                f_new > f + 64 * EPS * max(abs(f), 1.0)
                and not np.linalg.norm(d * g_new) < 0.5 * np.linalg.norm(d * g)):
            break
        x, f, g, prev = x_new, f_new, g_new, snorm
    return x, f, g


def _pd(w) -> bool:
    return bool(w[0] > 1e-13 * max(np.max(np.abs(w)), 1e-300))


def newton(objective, x0, *, tol=1e-10, max_iter=200, refine=8,
           progress: Progress = None, bounded=None, runaway=30.0, start_value=None,
           **_) -> OptimResult:
    """Trust-region Newton with the exact, Jacobi-scaled Hessian and iterative refinement.

    Converged when the Newton decrement ``g' H^-1 g / 2`` (the predicted decrease of the NLL to
    the optimum, in log-likelihood units) is below ``tol`` at a positive definite Hessian.
    ``start_value=(x, f, g)``, a point the caller already evaluated, saves that evaluation when
    ``x`` is the start.

    A Hessian costs about as much as a gradient on a large data set, so the last iterations
    reuse one: once a full Newton step lands where the decrement, measured with the previous
    Hessian, is below :data:`NEAR`, refinement steps with that Hessian polish the solution and a
    fresh Hessian at the final point (the one the standard errors need) certifies convergence;
    if it does not, Newton iterations resume from there.
    """
    value_and_grad, hessian = objective.value_and_grad, objective.hessian
    count = [0]

    def counted(z):
        count[0] += 1
        return value_and_grad(z)

    x, f, g = warm_start(counted, hessian, x0, bounded, start_value=start_value)
    H_at_x = None  # the Hessian at the current x, when known
    if not np.isfinite(f):
        return OptimResult(x, f, g, 0, count[0], False,
                           "the log-likelihood is not finite at the starting point", "newton")
    radius = np.inf
    history = [f]
    converged = False
    polished = False  # converged through the polish-then-certify path (already refined)
    message = "iteration limit reached"
    it = 0
    d = w = V = None
    full_step = False  # the last accepted step was an interior Newton step the model predicted
    for it in range(1, max_iter + 1):
        if (full_step and refine and _pd(w)
                and 0.5 * float(np.sum((V.T @ (d * g)) ** 2 / w)) < NEAR):
            x, f, g = _polish(counted, x, f, g, d, w, V, refine)
            H_at_x = hessian(x)
            polished = True
        H = H_at_x if H_at_x is not None else hessian(x)
        H_at_x = H
        if not np.all(np.isfinite(H)):
            message = "the Hessian is not finite"
            break
        d, w, V = _scaled_eigh(H)
        gs = d * g
        wmax = max(np.max(np.abs(w)), 1e-300)
        keep = w > 1e-13 * wmax
        a = V.T @ gs
        decrement = 0.5 * float(np.sum(a[keep] ** 2 / w[keep]))
        # positive semi-definite with no gradient along its null space: a flat ridge of optima
        # (non-identifiable parameters; the diagnosis names them)
        ridge = (w[0] > -1e-8 * wmax
                 and np.all(np.abs(a[~keep]) <= 1e-9 * max(1.0, float(np.linalg.norm(a)))))
        if (keep.all() or ridge) and decrement < tol:
            converged = True
            message = "Newton decrement below tolerance"
            break
        polished = False
        accepted = False
        full_step = False
        for _inner in range(60):
            ss, interior = _tr_step(gs, w, V, radius)
            step = d * ss
            pred = -(gs @ ss + 0.5 * ss @ (V @ (w * (V.T @ ss))))
            x_new = x + step
            f_new, g_new = counted(x_new)
            snorm = np.linalg.norm(ss)
            if not np.isfinite(f_new):
                radius = 0.25 * snorm
                continue
            ared = f - f_new
            noise = 64 * EPS * max(abs(f), 1.0)
            if pred <= noise:
                # in the noise of the objective: accept if it does not make things worse
                ok = ared >= -noise
                rho = 1.0
            else:
                rho = ared / pred
                ok = rho > 1e-4
            if ok:
                if rho > 0.75 and snorm >= 0.99 * radius:
                    radius = 2.0 * radius
                elif rho < 0.25:
                    radius = 0.25 * snorm
                x, f, g, H_at_x = x_new, f_new, g_new, None
                accepted = True
                full_step = interior and rho > 0.9
                break
            radius = 0.25 * snorm
            if radius < 1e-300:
                break
        history.append(f)
        if progress is not None:
            progress(it, f, float(np.linalg.norm(g)))
        if not accepted:
            message = "no step decreases the negative log-likelihood (stalled)"
            break
        if _runaway(x, bounded, 40 * runaway):
            message = "a bounded parameter runs to its bound (the likelihood keeps increasing)"
            break
    if converged and refine and not polished and _pd(w):
        # Iterative refinement with the last Hessian recovers accuracy lost to its conditioning.
        x_new, f, g = _polish(counted, x, f, g, d, w, V, refine)
        if not np.array_equal(x_new, x):
            x, H_at_x = x_new, None
    ran = _runaway(x, bounded, runaway)
    # the Hessian is returned only when it was taken at the final point
    return OptimResult(x, f, g, it, count[0], converged, message, "newton", tuple(history),
                       hessian=H_at_x, runaway=ran)


def lbfgs(objective, x0, *, tol=1e-10, max_iter=2000, progress: Progress = None,
          bounded=None, runaway=30.0, start_value=None, **_) -> OptimResult:
    """L-BFGS-B (SciPy) on the Jacobi-scaled problem; the scaling uses the Hessian at ``x0``."""
    value_and_grad, hessian = objective.value_and_grad, objective.hessian
    x0 = warm_start(value_and_grad, hessian, x0, bounded, rounds=2, start_value=start_value)[0]
    H0 = hessian(x0)
    diag = np.abs(np.diag(H0)) if np.all(np.isfinite(H0)) else np.ones_like(x0)
    d = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    history = []
    count = {"n": 0}

    def fun(z):
        f, g = value_and_grad(x0 + d * z)
        count["n"] += 1
        if not np.isfinite(f):
            return np.inf, np.zeros_like(z)
        return f, d * g

    def callback(intermediate_result):
        history.append(float(intermediate_result.fun))
        if progress is not None:
            progress(len(history), float(intermediate_result.fun), float("nan"))

    import scipy.optimize

    res = scipy.optimize.minimize(
        fun, np.zeros_like(x0), jac=True, method="L-BFGS-B", callback=callback,
        options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e3 * EPS, "maxcor": 30},
    )
    x = x0 + d * res.x
    f, g = value_and_grad(x)
    n_extra = [1]
    # L-BFGS's own flag is about its stopping rule; we also require a small Newton decrement.
    H = hessian(x)
    converged = False
    message = str(res.message)
    if np.all(np.isfinite(H)):
        dd, w, V = _scaled_eigh(H)
        if _pd(w):
            # L-BFGS stops where its gradient differences stop carrying information, which on an
            # ill-conditioned design (NIST Longley) is 6-7 digits short of the optimum: finish
            # with refinement steps x <- x - H^{-1} g(x) with the exact Hessian it ends at (not
            # after the iteration cap: max_iter means stop there).
            def counted(z):
                n_extra[0] += 1
                return value_and_grad(z)

            if res.nit < max_iter:
                x_new, f, g = _polish(counted, x, f, g, dd, w, V, 8)
                if not np.array_equal(x_new, x):
                    x, H = x_new, None
            decrement = 0.5 * float(np.sum((V.T @ (dd * g)) ** 2 / w))
            converged = decrement < max(tol, 1e-8)
            if not converged:
                message += f"; Newton decrement {decrement:.3g} above tolerance"
    ran = _runaway(x, bounded, runaway)
    return OptimResult(x, f, g, int(res.nit), count["n"] + n_extra[0], converged, message,
                       "lbfgs", tuple(history), hessian=H, runaway=ran)


def gradient_descent(objective, x0, *, learning_rate=0.1, max_iter=5000,
                     tol=1e-6, n_obs=1, progress: Progress = None, bounded=None, runaway=30.0,
                     **_) -> OptimResult:
    """Plain gradient descent on the mean NLL: ``x <- x - learning_rate * grad(NLL)/n``.

    Converged when the gradient of the mean NLL has max-norm below ``tol``. The loss history is
    the mean NLL (cross-entropy per observation for a classifier) after each step.
    """
    value_and_grad = objective.value_and_grad
    x = np.array(x0, dtype=float)
    n = max(int(n_obs), 1)
    f, g = value_and_grad(x)
    history = [f / n]
    converged = False
    message = "iteration limit reached"
    it = 0
    for it in range(1, max_iter + 1):
        gm = g / n
        if np.max(np.abs(gm), initial=0.0) < tol:
            converged = True
            message = "gradient below tolerance"
            it -= 1
            break
        x = x - learning_rate * gm
        f, g = value_and_grad(x)
        if not np.isfinite(f):
            message = "diverged (learning rate too large?)"
            break
        history.append(f / n)
        if progress is not None and it % 50 == 0:
            progress(it, f, float(np.linalg.norm(g)))
    ran = _runaway(x, bounded, runaway)
    return OptimResult(x, f, g, it, it + 1, converged, message, "gd", tuple(history), runaway=ran)


#: The one registry of optimization methods: name -> (function, one-line description).
METHODS: dict[str, tuple[Callable[..., OptimResult], str]] = {
    "newton": (newton, "trust-region Newton, exact scaled Hessian, iterative refinement (default)"),
    "lbfgs": (lbfgs, "L-BFGS-B (SciPy) on the Jacobi-scaled problem, exact-Hessian refinement"),
    "gd": (gradient_descent, "plain gradient descent on the mean NLL (learning_rate, max_iter)"),
}


def get_method(name: str) -> Callable[..., OptimResult]:
    """Look a method up in :data:`METHODS`, with an error that lists the valid names."""
    from mle_ppl._src.errors import MLEError, did_you_mean

    if name not in METHODS:
        raise MLEError(
            f"method={name!r} is not an optimization method; expected one of "
            f"{sorted(METHODS)}.{did_you_mean(name, METHODS)}"
        )
    return METHODS[name][0]
