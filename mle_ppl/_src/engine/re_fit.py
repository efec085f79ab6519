"""After a mixed-model fit: variance components on the boundary, and the random-effects report.

Works on any objective with the Laplace objective's extras (``variance_coords``, ``modes``,
``mixed_partials``, ``u_labels``); duck-typed, so that this module does not import it.
"""

from __future__ import annotations

import numpy as np

#: A variance parameter moved this far down (log scale, σ x e^-30) without the marginal
#: likelihood dropping is at its boundary σ = 0.
BOUNDARY_SHIFT = 30.0
#: Where a variance coordinate that ran off to σ = 0 is held (log scale).
HOLD_AT = 40.0


def settle_boundary(obj, res, optimizer, options: dict):
    """Variance parameters whose estimate sits on the boundary σ = 0 (lme4's singular fit).

    A log-scale variance coordinate is on the boundary when the optimizer's runaway detection
    found the likelihood rising as it runs to σ = 0, or when moving it down by
    :data:`BOUNDARY_SHIFT` (σ x e^-30) does not lower the marginal log-likelihood: the maximum
    is at σ = 0, where the log scale has no finite optimum. Such coordinates are held there and
    the others are re-optimised. Returns ``(result, fixed indices)``.
    """
    from dataclasses import replace

    from mle_ppl._src.engine.objective import Callables

    x = np.array(res.x)
    f = float(res.fun)
    candidates = obj.variance_coords & obj.bounded
    if not res.converged and not (res.runaway and all(candidates[i] for i in res.runaway)):
        return res, ()  # not converged for another reason: nothing to settle
    tol = 1e-9 * max(1.0, abs(f))
    fixed = []
    for i in np.flatnonzero(candidates):
        b = next(b for b in obj.blocks if b.start <= i < b.start + b.size)
        if b.lower != 0.0 or not np.isinf(b.upper):
            continue
        if i in res.runaway:  # the optimizer found the NLL falling as it ran to σ = 0
            fixed.append(int(i))
            # held at e^-40 (not where the run stopped, e^-300 or so): the same likelihood to
            # rounding, and a profile walks up from there in a few steps
            cand = x.copy()
            cand[i] = max(x[i], -HOLD_AT)
            fc = obj.value(cand)
            if np.isfinite(fc) and fc <= f + tol:
                x = cand
            continue
        cand = x.copy()
        cand[i] -= BOUNDARY_SHIFT
        fc = obj.value(cand)
        if np.isfinite(fc) and fc <= f + tol:
            x, f = cand, min(f, fc)
            fixed.append(int(i))
    if not fixed:
        obj.value_and_grad(res.x)
        return res, ()
    keep = np.array([j for j in range(obj.n_params) if j not in fixed], dtype=int)

    def full(zk):
        xx = x.copy()
        xx[keep] = zk
        return xx

    def vg(zk):
        fv, gv = obj.value_and_grad(full(zk))
        return fv, gv[keep]

    def hess(zk):
        return obj.hessian(full(zk))[np.ix_(keep, keep)]

    opts = {k: v for k, v in options.items() if k not in ("start_value", "bounded")}
    sub = optimizer(Callables(vg, hess), x[keep], bounded=obj.bounded[keep], **opts)
    xf = full(sub.x)
    fv, gv = obj.value_and_grad(xf)
    H = None
    if sub.hessian is not None:
        H = obj.hessian(xf)
    return replace(res, x=xf, fun=fv, grad=gv, converged=sub.converged, message=sub.message,
                   iterations=res.iterations + sub.iterations,
                   n_evals=res.n_evals + sub.n_evals, hessian=H, runaway=()), tuple(fixed)


def random_effects_report(obj, x: np.ndarray, cov_u: np.ndarray,
                          fixed: tuple[int, ...] = ()):
    """Conditional modes and SDs (with the uncertainty of θ̂, as TMB's sdreport)."""
    from mle_ppl._src.engine.re_report import RandomEffects

    u, blocks = obj.modes(x)
    cond = np.sqrt(np.clip(blocks.diag_inverse(), 0, None))
    keep = np.array([j for j in range(obj.n_params) if j not in fixed], dtype=int)
    notes = []
    if np.all(np.isfinite(cov_u)) and len(keep):
        D = obj.mixed_partials(x)[:, keep]
        C = np.asarray(cov_u)[np.ix_(keep, keep)]
        extra = np.einsum("ij,jk,ik->i", D, C, D)
        se = np.sqrt(np.clip(blocks.diag_inverse() + extra, 0, None))
    else:
        se = np.full(len(u), np.nan)
        notes.append("the std_err of the modes needs a finite covariance of the parameters; "
                     "it is NaN (see the fit's warnings). sd_conditional is given θ̂ alone.")
    if any(obj.model.rvs_to_transforms.get(rv) is not None for rv in obj._u_rvs):
        notes.append("modes and SDs are on the unconstrained scale of the transformed random "
                     "effects.")
    var_labels = tuple(obj.labels[i] for i in np.flatnonzero(obj.variance_coords))
    exact = _quadratic_in_u(obj, x, u)
    return RandomEffects(
        names=obj.random_names, labels=obj.u_labels, mode=u, std_err=se,
        sd_conditional=cond, variance_params=var_labels,
        boundary=tuple(obj.labels[i] for i in fixed),
        method="laplace" + (" (exact: the log-density is quadratic in the random effects)"
                            if exact else ""),
        notes=tuple(notes))


def _quadratic_in_u(obj, x: np.ndarray, u: np.ndarray) -> bool:
    """Whether the joint log-density is quadratic in the random effects (so Laplace is exact):
    third differences along two random directions from the modes vanish (8 evaluations of the
    compiled joint log-density; False for an objective without ``joint_logp``).

    Evaluated at ``x`` with the random effects' variance coordinates at 0 (σ = 1, ρ = 0): at a
    σ̂ near 0 (a boundary fit holds e^-40) the random effects' own quadratic density would
    dwarf the third difference of the observations' terms, which does not depend on σ.
    """
    from mle_ppl._src.engine.linalg import quadratic_along

    L = getattr(obj, "joint_logp", None)
    if L is None or not len(u):
        return False
    x = np.array(x, dtype=float)
    x[np.asarray(obj.variance_coords, dtype=bool)] = 0.0
    z0 = np.concatenate([x, u])
    rng = np.random.default_rng(0)
    for _ in range(2):
        v = np.zeros(len(z0))
        # steps of order 1 on the random effects' (linear predictor's) scale, random signs
        v[len(x):] = rng.uniform(0.3, 0.7, len(u)) * rng.choice([-1.0, 1.0], len(u))
        if not quadratic_along(L, z0, v):
            return False
    return True


def settle_profile_point(obj, x: np.ndarray, free: np.ndarray):
    """A profile's inner fit of a mixed model: maximise over the coordinates ``free`` of ``x``.

    Where the conditional maximum of another variance parameter is at σ = 0 (profiling one SD
    up can push another to 0), Newton on its log scale never converges: the likelihood keeps
    rising as it runs off. Such a coordinate is held at e^-:data:`HOLD_AT` when that does not
    lower the likelihood, and the others are re-fitted: the maximum on that boundary. A
    coordinate already held (the previous point of the walk) is tried there first. Returns
    ``(x, loglik, converged)``.
    """
    x = np.array(x, dtype=float)
    held = [int(j) for j in free if obj.variance_coords[j] and x[j] <= 1 - HOLD_AT]
    if held:
        xs, ll, ok = _newton_on(obj, x, np.array([j for j in free if j not in held], dtype=int))
        if ok:
            return xs, ll, ok
    x, ll, ok = _newton_on(obj, x, np.asarray(free, dtype=int))
    if ok or not np.isfinite(ll):
        return x, ll, ok
    f = -ll
    tol = 1e-9 * max(1.0, abs(f))
    held = []
    for j in free:
        b = next(b for b in obj.blocks if b.start <= j < b.start + b.size)
        if not (obj.variance_coords[j] and obj.bounded[j] and b.lower == 0.0
                and np.isinf(b.upper)):
            continue
        cand = x.copy()
        cand[j] = min(x[j], -HOLD_AT)
        fc = obj.value(cand)
        if np.isfinite(fc) and fc <= f + tol:
            x, f = cand, min(f, fc)
            held.append(int(j))
    if not held:
        return x, ll, False
    return _newton_on(obj, x, np.array([j for j in free if j not in held], dtype=int))


def _newton_on(obj, x: np.ndarray, free: np.ndarray):
    """Newton (tolerance 1e-12, 100 iterations) on the coordinates ``free`` of ``x``."""
    from mle_ppl._src.engine.objective import Callables
    from mle_ppl._src.engine.optimize import newton

    x = np.array(x, dtype=float)
    if not len(free):
        f = obj.value(x)
        return x, -float(f), bool(np.isfinite(f))

    def full(z):
        xx = x.copy()
        xx[free] = z
        return xx

    def vg(z):
        f, g = obj.value_and_grad(full(z))
        return f, g[free]

    if not np.isfinite(vg(x[free])[0]):
        return x, -np.inf, False
    res = newton(Callables(vg, lambda z: obj.hessian(full(z))[np.ix_(free, free)]), x[free],
                 tol=1e-12, max_iter=100, runaway=0)
    x[free] = res.x
    return x, -float(res.fun), bool(res.converged and np.isfinite(res.fun))
