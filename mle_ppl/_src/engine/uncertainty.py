"""Observed information, covariance on the user's scale, and the diagnostics of a fit.

Array layer only (NumPy): the inputs are the optimum, the Hessian on the unconstrained scale and
the Jacobian of the map to the user's (constrained) scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mle_ppl._src.errors import (
    BoundaryWarning,
    ConvergenceWarning,
    IdentifiabilityWarning,
    SeparationWarning,
)

#: Relative eigenvalue of the unit-diagonal (correlation-scaled) observed information below which
#: a direction is called non-identifiable: rounding alone gives ~1e-16 there, while the worst
#: certified least-squares designs (NIST Longley, Wampler) stay above ~1e-13.
RANK_TOL = 1e-14
#: Condition number of the scaled information above which fitted 0/1 probabilities mean separation.
SEPARATION_COND = 1e8
# A bounded parameter is "at its boundary" when the optimizer reports it among the coordinates
# that ran off (see engine/endgame.py: no information along it at the end, and far from its
# start in relative terms), never by the raw size of its unconstrained value: log σ = -20 is an
# ordinary interior optimum for data in units of 1e-9.


@dataclass(frozen=True)
class Diagnosis:
    """Covariances and diagnostics at the optimum."""

    cov: np.ndarray  #: user (constrained) scale
    cov_unconstrained: np.ndarray
    grad_norm: float  #: max-norm of the gradient of the NLL on the user's scale
    hessian_min_eig: float  #: of the observed information on the user's scale
    hessian_cond: float
    scaled_min_eig: float  #: smallest eigenvalue of the unit-diagonal scaled information
    warnings: tuple[tuple[type, str], ...]
    trustworthy: bool


def _scaled(H: np.ndarray):
    diag = np.abs(np.diag(H))
    d = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    Hs = d[:, None] * H * d[None, :]
    w, V = np.linalg.eigh(0.5 * (Hs + Hs.T))
    return d, w, V


def _direction(v: np.ndarray, labels) -> str:
    v = v / np.max(np.abs(v))
    terms = [(labels[i], v[i]) for i in np.argsort(-np.abs(v)) if abs(v[i]) > 0.05][:6]
    return " ".join(f"{'-' if c < 0 else '+'} {abs(c):.3g}·{lab}" for lab, c in terms).lstrip("+ ")


def diagnose(
    *,
    x: np.ndarray,
    grad_u: np.ndarray,
    hessian_u: np.ndarray,
    jacobian: np.ndarray,
    labels: tuple[str, ...],
    converged: bool,
    optimizer_message: str,
    bounded: np.ndarray,
    runaway: tuple[int, ...],
    pointwise,
    discrete_outcome: bool,
    loglik: float,
    n_obs: int | None = None,
    method: str | None = None,
) -> Diagnosis:
    """Covariance by the delta method and the honest list of what is wrong with the fit.

    ``cov = J H_u^{-1} J'``; at a stationary point this equals the inverse of the observed
    information taken directly on the constrained scale, ``J^{-T} H_u J^{-1}``.

    ``pointwise`` (per-observation log-likelihoods: a dict, or a callable returning one or the
    counts ``(fitted with probability 1, all)`` for chunked data, so that
    the n-sized pass is only made when a separation check needs it) is used for discrete outcomes.
    ``method`` (the optimizer's name) keeps the non-convergence hint from suggesting the method
    that was used.
    """
    p = len(x)
    warns: list[tuple[type, str]] = []
    nan = np.full((p, p), np.nan)
    if p == 0:
        return Diagnosis(np.zeros((0, 0)), np.zeros((0, 0)), 0.0, np.nan, np.nan, np.nan, (), True)
    finite_h = bool(np.all(np.isfinite(hessian_u)))
    # gradient on the user's scale: g_theta = J^{-T} g_u
    try:
        g_theta = np.linalg.solve(jacobian.T, grad_u)
    except np.linalg.LinAlgError:
        g_theta = np.full(p, np.nan)
    grad_norm = float(np.max(np.abs(g_theta))) if np.all(np.isfinite(g_theta)) else float(
        np.max(np.abs(grad_u)))
    min_eig = cond = scaled_min = np.nan
    cov = cov_u = nan
    pd = False
    if finite_h:
        d, w, V = _scaled(hessian_u)
        wmax = max(np.max(np.abs(w)), 1e-300)
        scaled_min = float(w[0] / wmax)
        pd = w[0] > RANK_TOL * wmax
        try:
            Jinv = np.linalg.inv(jacobian)
            H_theta = Jinv.T @ hessian_u @ Jinv
            ev = np.linalg.eigvalsh(0.5 * (H_theta + H_theta.T))
            min_eig = float(ev[0])
            cond = float(ev[-1] / ev[0]) if ev[0] > 0 else np.inf
        except np.linalg.LinAlgError:
            pass
        if pd:
            cov_u = (d[:, None] * (V / w) @ V.T) * d[None, :]
            cov = jacobian @ cov_u @ jacobian.T
            cov = 0.5 * (cov + cov.T)
        elif converged:
            # name the directions that the data do not determine (away from an optimum an
            # indefinite Hessian says nothing about identifiability: the ConvergenceWarning does)
            bad = [V[:, j] * d for j in range(p) if w[j] <= RANK_TOL * wmax]
            psd = all(w[j] > -1e-8 * wmax for j in range(p))
            kind = "singular" if psd else "not positive definite"
            dirs = "; ".join(_direction(v, labels) for v in bad[:3])
            involved = sorted({labels[i] for v in bad for i in np.flatnonzero(
                np.abs(v) > 0.05 * np.max(np.abs(v)))})
            warns.append((IdentifiabilityWarning,
                          f"the observed information is {kind} at the optimum: the data do not "
                          f"identify {', '.join(involved)} (flat direction: {dirs}). Standard "
                          "errors are NaN. Remove a redundant parameter or column, or fix one."))
    at_bound = [labels[i] for i in runaway if bounded[i]]
    if not finite_h and not at_bound and converged:
        warns.append((IdentifiabilityWarning,
                      "the Hessian is not finite at the optimum; standard errors are NaN."))
    if not converged and not at_bound and not runaway:
        newton = "" if method == "newton" else (
            ", try the Newton optimizer (--method newton; method='newton' in Python)")
        warns.append((ConvergenceWarning,
                      f"the optimizer did not converge ({optimizer_message}); the estimates are "
                      "not the MLE and standard errors are NaN. Raise the iteration cap "
                      f"(--max-iter; max_iter= in Python){newton}, give starting values, or "
                      "check the model."))
    separation = False
    # complete: every observation fitted with probability 1 (then the log-likelihood is ~0);
    # quasi-complete: some are, and the information is near-singular along the direction that
    # separates them
    ill = (not pd or bool(runaway) or (finite_h and scaled_min < 1.0 / SEPARATION_COND))
    all_perfect_possible = n_obs is None or -loglik <= 1e-9 * n_obs
    if discrete_outcome and pointwise is not None and (ill or all_perfect_possible):
        if callable(pointwise):
            pointwise = pointwise()
        if isinstance(pointwise, tuple):  # (perfect, total) counted chunk by chunk
            n_perfect, n_tot = pointwise
        else:
            n_perfect = sum(int(np.sum(v > -1e-9)) for v in pointwise.values())
            n_tot = sum(v.size for v in pointwise.values())
        sep_signal = n_perfect == n_tot or ill
        if n_perfect and sep_signal:
            separation = True
            kind = "complete" if n_perfect == n_tot else "quasi-complete"
            ran = ", ".join(labels[i] for i in runaway) if runaway else "a direction of the "\
                "coefficients"
            warns.append((SeparationWarning,
                          f"likely {kind} separation: {n_perfect} of {n_tot} observations are "
                          f"fitted with probability 1 (log-likelihood {loglik:.3g} → 0 while "
                          f"{ran} run off to ±∞). The MLE does not exist; standard errors are "
                          "NaN. Drop or merge the separating predictor, or use proper priors "
                          "(mle_ppl.sample with priors=...)."))
    if at_bound and not separation:
        warns.append((BoundaryWarning,
                      f"{', '.join(at_bound)} at the boundary of the parameter space (the "
                      "likelihood increases without bound or peaks on the boundary, e.g. σ → 0 "
                      "with a perfect fit). Wald standard errors do not apply and are NaN."))
    elif runaway and not separation:
        names = ", ".join(labels[i] for i in runaway)
        warns.append((ConvergenceWarning,
                      f"no finite maximum found from this start: {names} ran off (the "
                      "log-likelihood keeps rising, or flattens, as they grow). The estimates "
                      "are not an MLE and standard errors are NaN. Try other starting values "
                      "(start=..., starts=K), or check that the model can fit these data."))
    trustworthy = not warns
    if not trustworthy:
        cov = nan
        cov_u = nan
    return Diagnosis(cov, cov_u, grad_norm, min_eig, cond, scaled_min, tuple(warns), trustworthy)
