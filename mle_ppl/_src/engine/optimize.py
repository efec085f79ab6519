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

from mle_ppl._src.engine.linalg import scaled_eigh, tr_step
from mle_ppl._src.engine.warm_start import _illinois, _solve_1d, warm_start  # noqa: F401

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


def _ran_off(hessian, H, x, x_start, x_first, bounded):
    """Coordinates that ran off (see :func:`~mle_ppl._src.engine.endgame.ran_off`)."""
    from mle_ppl._src.engine import endgame

    H = hessian(x) if H is None else H
    if not np.all(np.isfinite(H)):
        return ()
    d, w, V = scaled_eigh(H)
    return endgame.ran_off(x, x_start, x_first, bounded, d, w, V)


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


#: Ceiling on Newton iterations; the usual stop for a fit that makes no progress is the stall
#: test (:data:`STALL_WINDOW`), so hard but solvable problems (Bennett5-like valleys: ~600
#: iterations) are not cut short.
MAX_ITER = 10_000
#: Newton stops as stalled when the NLL fell by less than ``STALL_RTOL * max(1, |NLL|)`` over
#: this many iterations.
STALL_WINDOW = 100
STALL_RTOL = 1e-12
#: A fit is converged only when the Newton step left at the end is below this many standard
#: errors in every coordinate (or within the rounding of the coordinate itself).
STEP_SE = 1e-6
#: Rounds of leaving a saddle or degenerate stationary point before accepting it.
ESCAPES = 3
#: Where rounding stops progress (FLOOR_RUN iterations without a decrease of the NLL beyond its
#: rounding) with a positive definite information and a Newton step left below ROUND_SE
#: standard errors, the fit has converged as far as double precision allows.
ROUND_SE = 0.1
FLOOR_RUN = 5
#: Scaled eigenvalue (relative) below which the information is singular in double precision;
#: SINGULAR_RUN non-converged iterations in a row there end the fit with that diagnosis.
RANK_EPS = 1e-14
SINGULAR_RUN = 200


def _step_in_se(g, d, w, V):
    """``|H^-1 g|_i / sqrt((H^-1)_ii)``: the Newton step left, in standard errors."""
    inv_diag = np.sum(V**2 / w, axis=1)
    step = V @ ((V.T @ (d * g)) / w)
    return np.abs(step) / np.sqrt(np.maximum(inv_diag, 1e-300))


def newton(objective, x0, *, tol=1e-10, max_iter=MAX_ITER, refine=8,
           progress: Progress = None, bounded=None, runaway=True, start_value=None,
           escape=True, **_) -> OptimResult:
    """Trust-region Newton with the exact, Jacobi-scaled Hessian and iterative refinement.

    Converged when the Newton decrement ``g' H^-1 g / 2`` (the predicted decrease of the NLL to
    the optimum, in log-likelihood units) is below ``tol`` at a positive definite Hessian and the
    step left is below :data:`STEP_SE` standard errors. ``start_value=(x, f, g)``, a point the
    caller already evaluated, saves that evaluation when ``x`` is the start.

    A Hessian costs about as much as a gradient on a large data set, so the last iterations
    reuse one: once a full Newton step lands where the decrement, measured with the previous
    Hessian, is below :data:`NEAR`, refinement steps with that Hessian polish the solution and a
    fresh Hessian at the final point (the one the standard errors need) certifies convergence;
    if it does not, Newton iterations resume from there.

    At a stationary point whose information is singular or indefinite (``escape=True``), the
    directions of zero or negative curvature are probed and exact ties broken
    (:mod:`~mle_ppl._src.engine.endgame`); iterations continue from any lower point found. A fit
    whose coordinates ran off along a flat direction (``runaway=True``) is never converged: "no
    finite maximum found from this start".
    """
    from mle_ppl._src.engine import endgame

    value_and_grad, hessian = objective.value_and_grad, objective.hessian
    count = [0]

    def counted(z):
        count[0] += 1
        return value_and_grad(z)

    x_start = np.array(x0, dtype=float)
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
    x_first = None
    prev = None  # the last accepted point before x, to step back to from a non-finite Hessian
    escapes = 0
    ran_loop = ()
    x_window = None  # the iterate STALL_WINDOW iterations ago
    singular_run = 0  # consecutive iterations with a numerically singular information
    floor_run = 0  # consecutive iterations at the rounding floor
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
            if prev is not None and radius > 1e-12:
                # a step into a region where the Hessian overflows: back off, smaller radius
                radius = 0.25 * float(np.linalg.norm((x - prev[0]) / d)) if d is not None \
                    else 1.0
                x, f, g, H_at_x = prev[0], prev[1], prev[2], prev[3]
                prev = None
                history.append(f)
                continue
            message = "the Hessian is not finite"
            break
        d, w, V = scaled_eigh(H)
        gs = d * g
        wmax = max(np.max(np.abs(w)), 1e-300)
        keep = w > 1e-13 * wmax
        a = V.T @ gs
        decrement = 0.5 * float(np.sum(a[keep] ** 2 / w[keep]))
        # positive semi-definite with no gradient along its null space: a flat ridge of optima
        # (non-identifiable parameters; the diagnosis names them) -- or a degenerate saddle
        ridge = (w[0] > -1e-8 * wmax
                 and np.all(np.abs(a[~keep]) <= 1e-9 * max(1.0, float(np.linalg.norm(a)))))
        if (keep.all() or ridge) and decrement < tol:
            if escape and escapes < ESCAPES and endgame.needs_check(w):
                found = endgame.probe(counted, x, f, endgame.flat_directions(d, w, V))
                while found is None and escapes < ESCAPES:
                    escapes += 1  # break a tie: restart from a perturbed point
                    sub = newton(objective, endgame.shake(x, d, seed=escapes,
                                                          scale=endgame.SHAKES[escapes - 1]),
                                 tol=tol, max_iter=max(1, min(max_iter - it, 500)),
                                 refine=refine, escape=False, runaway=False)
                    count[0] += sub.n_evals
                    if np.isfinite(sub.fun) and sub.fun < f - endgame.margin(f):
                        found = (sub.x, sub.fun, sub.grad)
                if found is not None:
                    x, f, g = found
                    H_at_x, radius, full_step, polished = None, np.inf, False, False
                    history.append(f)
                    continue
            if keep.all() and not polished and refine and STEP_SE:
                # a tight final test: the step left must be a tiny fraction of an SE; refine
                x_new, f, g = _polish(counted, x, f, g, d, w, V, refine)
                if not np.array_equal(x_new, x):
                    x, H_at_x, polished = x_new, None, True
                    continue
            if keep.all() and np.max(_step_in_se(g, d, w, V)) > STEP_SE and not np.all(
                    np.abs(d * (V @ (a / w))) <= POLISH_RTOL * np.maximum(np.abs(x), d)):
                pass  # not yet: the step left is above STEP_SE standard errors
            else:
                converged = True
                message = "Newton decrement below tolerance"
                break
        # the rounding floor: data fitted to ~1e-13 (Lanczos-type exact data) leave a Newton
        # step of 1e-3 to 0.05 SE that rounding in the NLL and gradient never lets shrink
        floor_run = floor_run + 1 if (
            keep.all() and not endgame.needs_check(w) and len(history) > 1
            and history[-2] - f <= 1e3 * EPS * max(1.0, abs(f))
            and np.max(_step_in_se(g, d, w, V)) <= ROUND_SE) else 0
        if floor_run >= FLOOR_RUN:
            # a plateau where the data say nothing about a parameter that ran far from its
            # start (SE larger than the value) is a runaway, not a rounding floor
            se = d * np.sqrt(np.sum(V**2 / w, axis=1))
            far = endgame.far_from_start(x, x_start, x if x_first is None else x_first, bounded)
            ran_loop = tuple(i for i in far if se[i] > abs(x[i]))
            if ran_loop and runaway:
                message = "the log-likelihood is flat along them"
                break
            converged = True
            message = (f"converged to the rounding level of the log-likelihood (the Newton step "
                       f"left is below {ROUND_SE:g} standard errors, and rounding stops it "
                       "shrinking)")
            break
        polished = False
        accepted = False
        full_step = False
        for _inner in range(60):
            ss, interior = tr_step(gs, w, V, radius)
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
                prev = (x, f, g, H_at_x)
                x, f, g, H_at_x = x_new, f_new, g_new, None
                accepted = True
                full_step = interior and rho > 0.9
                break
            radius = 0.25 * snorm
            if radius < 1e-300:
                break
        if x_first is None and accepted:
            x_first = x.copy()
        history.append(f)
        if progress is not None:
            progress(it, f, float(np.linalg.norm(g)))
        if not accepted:
            message = "no step decreases the negative log-likelihood (stalled)"
            if keep.all() and decrement < tol:
                message = (f"the Newton step left is above {STEP_SE:g} standard errors and no "
                           "step reduces it (rounding)")
            break
        if it % STALL_WINDOW == 0 and runaway and x_window is not None:
            ran_loop = endgame.running_off(x, x_window, x_start, x_first, bounded,
                                           history[-STALL_WINDOW - 1] - f)
            if ran_loop:
                message = (f"the log-likelihood rose by less than {endgame.CREEP:g} in "
                           f"{STALL_WINDOW} iterations while they kept growing")
                break
        if it % STALL_WINDOW == 0:
            x_window = x.copy()
        singular_run = singular_run + 1 if w[0] <= RANK_EPS * wmax else 0
        if singular_run >= SINGULAR_RUN:
            message = (f"the observed information has stayed numerically singular for "
                       f"{SINGULAR_RUN} iterations (smallest scaled eigenvalue "
                       f"{w[0] / wmax:.1e}): double precision cannot resolve these parameters "
                       "on this scale. Centre and scale the predictors (or use orthogonal "
                       "polynomials) and refit")
            break
        if (len(history) > STALL_WINDOW
                and history[-STALL_WINDOW - 1] - f <= STALL_RTOL * max(1.0, abs(f))):
            message = (f"stalled: the log-likelihood rose by less than {STALL_RTOL:g} (relative)"
                       f" in {STALL_WINDOW} iterations")
            break
    if converged and refine and not polished and _pd(w):
        # Iterative refinement with the last Hessian recovers accuracy lost to its conditioning.
        x_new, f, g = _polish(counted, x, f, g, d, w, V, refine)
        if not np.array_equal(x_new, x):
            x, H_at_x = x_new, None
    ran = ran_loop
    if runaway and not ran and (not converged or w is None or endgame.needs_check(w)):
        if H_at_x is None:
            H_at_x = hessian(x)
        if np.all(np.isfinite(H_at_x)):
            dd, ww, VV = scaled_eigh(H_at_x)
            ran = endgame.ran_off(x, x_start, x if x_first is None else x_first, bounded,
                                  dd, ww, VV)
        else:  # the information overflowed on the way out (σ → 0 with a perfect fit)
            ran = endgame.far_from_start(x, x_start, x if x_first is None else x_first,
                                         bounded)
    if ran:
        converged = False
        message = ("no finite maximum found from this start: the log-likelihood keeps rising "
                   f"while coordinates {list(ran)} run off (" + message + ")")
    # the Hessian is returned only when it was taken at the final point
    return OptimResult(x, f, g, it, count[0], converged, message, "newton", tuple(history),
                       hessian=H_at_x, runaway=ran)


def lbfgs(objective, x0, *, tol=1e-10, max_iter=2000, progress: Progress = None,
          bounded=None, runaway=True, start_value=None, **_) -> OptimResult:
    """L-BFGS-B (SciPy) on the Jacobi-scaled problem; the scaling uses the Hessian at ``x0``."""
    value_and_grad, hessian = objective.value_and_grad, objective.hessian
    x_start = np.array(x0, dtype=float)
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
        dd, w, V = scaled_eigh(H)
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
    # sizes are judged against the start and the warm start (a linear model's first step)
    ran = _ran_off(hessian, H, x, x_start, x0, bounded) if runaway else ()
    if ran:
        converged = False
        message = f"no finite maximum found from this start: coordinates {list(ran)} run off"
    return OptimResult(x, f, g, int(res.nit), count["n"] + n_extra[0], converged, message,
                       "lbfgs", tuple(history), hessian=H, runaway=ran)


def gradient_descent(objective, x0, *, learning_rate=0.1, max_iter=5000,
                     tol=1e-6, n_obs=1, progress: Progress = None, bounded=None, runaway=True,
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
    x_first = None
    for it in range(1, max_iter + 1):
        gm = g / n
        if np.max(np.abs(gm), initial=0.0) < tol:
            converged = True
            message = "gradient below tolerance"
            it -= 1
            break
        x = x - learning_rate * gm
        if it == 1:
            x_first = x.copy()
        f, g = value_and_grad(x)
        if not np.isfinite(f):
            message = "diverged (learning rate too large?)"
            break
        history.append(f / n)
        if progress is not None and it % 50 == 0:
            progress(it, f, float(np.linalg.norm(g)))
    ran = ()
    if runaway and not converged and np.isfinite(f) and hasattr(objective, "hessian"):
        ran = _ran_off(objective.hessian, None, x, np.array(x0, dtype=float),
                       x_first if x_first is not None else x, bounded)
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
