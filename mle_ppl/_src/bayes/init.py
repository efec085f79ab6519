"""Where NUTS starts and with which mass matrix: at the MLE, scaled by its observed information.

Under flat priors the posterior is proportional to the likelihood, so its mode is the MLE and,
near the mode, its covariance on the unconstrained scale is the inverse observed information
``Σ_u = H⁻¹`` (the Hessian of the negative log-likelihood at the MLE). Starting every chain
there with ``Σ_u`` as the (inverse) mass matrix spares NUTS the search for the typical set and
the early, badly scaled tuning steps in which PyMC's default (``jitter+adapt_diag``: a unit
diagonal mass matrix from a jittered initial point) diverges on correlated posteriors such as a
regression with collinear predictors.

The mass matrix is **dense** when some pair of parameters is correlated beyond
:data:`DENSE_CORRELATION` (a diagonal matrix cannot undo correlation: the sampler's effective
condition number stays that of the correlation matrix, ``(1 + ρ)/(1 − ρ)`` for one pair), and
**diagonal** otherwise (cheaper per step, as good when the correlations are weak). Both adapt
further during tuning with PyMC's own potentials (``QuadPotentialFullAdapt`` /
``QuadPotentialDiagAdapt``), the information matrix serving as the initial estimate.

When the MLE cannot serve (no finite maximum, a covariance that is not finite or not positive
definite, or priors that change a parameter's transform) :func:`mle_nuts_setup` returns a
``reason`` and the caller falls back to PyMC's default initialisation, saying so in the result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

#: Dense mass matrix when max |correlation| between two parameters (unconstrained scale, from
#: the inverse observed information) exceeds this. At ρ = 0.5 a diagonal mass matrix leaves a
#: condition number of 3 for that pair; above it the cost of a dense matrix (O(p²) per leapfrog
#: step, p small here) is repaid by longer, less correlated trajectories.
DENSE_CORRELATION = 0.5

#: How many draws' worth of weight the information-based covariance has in PyMC's adaptive
#: potentials (PyMC's own ``init_nuts`` gives its unit guess 10).
INITIAL_WEIGHT = 10

#: The values of ``init=`` in :func:`mle_ppl.sample` (and ``--init`` in the CLI).
INIT_METHODS = {
    "mle": "start every chain at the MLE, mass matrix from the observed information (dense "
           "when parameters are correlated, else diagonal), adapted during tuning",
    "pymc": "PyMC's default: jitter+adapt_diag (jittered initial point, unit diagonal mass "
            "matrix adapted during tuning)",
}


@dataclass(frozen=True)
class NutsSetup:
    """A NUTS start at the MLE: ``initvals`` (user's scale) and the mass-matrix choice."""

    initvals: dict[str, np.ndarray]
    value_names: tuple[str, ...]  #: value variables in the order of ``mean``/``cov``
    mean: np.ndarray  #: the MLE on the unconstrained scale
    cov: np.ndarray  #: inverse observed information on the unconstrained scale
    dense: bool
    max_correlation: float

    def describe(self) -> str:
        kind = "dense" if self.dense else "diagonal"
        rel = ">" if self.dense else "<="
        return (f"mle: NUTS started at the MLE; {kind} mass matrix from the inverse observed "
                f"information (max |correlation| {self.max_correlation:.2f} {rel} "
                f"{DENSE_CORRELATION}), adapted during tuning")

    def step(self, model, *, target_accept: float, random_seed=None):
        """A ``pm.NUTS`` step on ``model`` with this mass matrix (adaptive, PyMC's potentials)."""
        import pymc as pm
        from pymc.step_methods.hmc import quadpotential

        values = {v.name: v for v in model.value_vars}
        n = len(self.mean)
        if self.dense:
            with warnings.catch_warnings():
                # PyMC flags the dense adaptive potential as experimental; its use here is
                # measured in benchmarks/bayes_init.py.
                warnings.filterwarnings("ignore", message="QuadPotentialFullAdapt is an "
                                                          "experimental feature")
                potential = quadpotential.QuadPotentialFullAdapt(
                    n, self.mean.copy(), self.cov.copy(), INITIAL_WEIGHT, rng=random_seed)
        else:
            potential = quadpotential.QuadPotentialDiagAdapt(
                n, self.mean.copy(), np.diag(self.cov).copy(), INITIAL_WEIGHT, rng=random_seed)
        return pm.NUTS(vars=[values[name] for name in self.value_names], potential=potential,
                       target_accept=float(target_accept), model=model, rng=random_seed)


def max_abs_correlation(cov: np.ndarray) -> float:
    """The largest |correlation| between two coordinates of a covariance (0 for one)."""
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    off = np.abs(corr[~np.eye(len(sd), dtype=bool)])
    return float(off.max()) if off.size else 0.0


def mle_nuts_setup(mle, model) -> tuple[NutsSetup | None, str | None]:
    """NUTS start and mass matrix for ``model`` from the fit ``mle`` (of its flat version).

    Returns ``(setup, None)``, or ``(None, reason)`` when the MLE cannot serve as the start.
    """
    if mle is None:
        return None, "the likelihood could not be maximised here"
    if not mle.converged:
        return None, "the MLE did not converge"
    boundary = getattr(getattr(mle, "random_effects", None), "boundary", ())
    if boundary:
        return None, (f"{', '.join(boundary)} = 0 at the MLE (a boundary fit), which is no "
                      "start inside the posterior's support")
    cov = np.asarray(mle.cov_unconstrained, dtype=float)
    if cov.size == 0 or not np.all(np.isfinite(cov)):
        return None, "the MLE has no finite covariance (" + "; ".join(mle.warnings) + ")"
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None, "the inverse observed information is not positive definite"
    values = {v.name: v for v in model.value_vars}
    blocks = list(mle.likelihood.blocks)
    re_ = getattr(mle, "random_effects", None)
    re_names = tuple(re_.names) if re_ is not None else ()
    if len(blocks) + len(re_names) != len(values):
        return None, "the sampled model has other free variables than the likelihood"
    point = model.initial_point()
    for b in blocks:
        if b.value_name not in values or np.size(point[b.value_name]) != b.size:
            return None, (f"the priors change how {b.name!r} is parametrised (its value "
                          f"variable is not {b.value_name!r} of size {b.size})")
    theta = np.asarray(mle.theta, dtype=float)
    initvals = {b.name: theta[b.slice].reshape(b.shape) for b in blocks}
    mean = np.asarray(mle.x, dtype=float).copy()
    value_names = tuple(b.value_name for b in blocks)
    if re_names:
        # random effects start at their conditional modes, with their sdreport variances
        # (uncorrelated with the parameters in the initial mass matrix; tuning adapts it)
        sizes = [np.size(point.get(n, ())) for n in re_names]
        var = np.asarray(re_.std_err, dtype=float) ** 2
        if any(n not in values for n in re_names) or sum(sizes) != len(re_.mode):
            return None, "the random effects are parametrised differently in the sampled model"
        if not np.all(np.isfinite(var) & (var > 0)):
            return None, "the random effects' conditional modes have no finite variance"
        modes = np.asarray(re_.mode, dtype=float)
        offs = np.cumsum([0, *sizes])
        for n, a, z in zip(re_names, offs[:-1], offs[1:], strict=True):
            initvals[n] = modes[a:z].reshape(np.shape(point[n]))
        mean = np.concatenate([mean, modes])
        p, q = cov.shape[0], len(modes)
        full = np.zeros((p + q, p + q))
        full[:p, :p], full[p:, p:] = cov, np.diag(var)
        cov = full
        value_names += re_names
    rho = max_abs_correlation(cov)
    return NutsSetup(initvals=initvals, value_names=value_names, mean=mean, cov=cov,
                     dense=rho > DENSE_CORRELATION, max_correlation=rho), None
