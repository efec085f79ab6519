"""Hard nonlinear likelihoods: full accuracy where a maximum is reached, an honest flag where not.

The problems (tests/_nonlinear_problems.py) are Gaussian models with published nonlinear mean
functions (NIST StRD: Misra1a, Thurber, BoxBOD, MGH09, MGH10, Eckerle4, Bennett5, Rat42, Rat43,
Lanczos; a Filip-like degree-10 polynomial), data made from them with a fixed seed, and the
optimum of those data computed independently in 80-digit arithmetic (mpmath). Each is fitted as a
user would, ``mle_ppl.fit(pm_model, start={...})``, from the published far and near starts.

The bar: a fit that says converged has at least 8 correct significant digits on every parameter
(and σ); a start from which no maximum is reached says so (never converged at a wrong answer).
"""

import warnings

import numpy as np
import pymc as pm
import pytest
from _nonlinear_problems import BY_NAME, CASES, compute_reference, digits, pymc_model, reference

import mle_ppl

#: Starts from which the optimizer does not reach the maximum, and what it must say instead.
#: MGH09 start 1 (25, 39, 41.5, 39): b1 -> 0 and b2 -> -inf with b1*b2 fixed, the likelihood
#: creeping up towards a limit; Eckerle4 start 1 (1, 10, 500): a peak of width 10 at x = 500
#: sees no data and runs off to a flat curve. Poly10: cond(X'X) beyond 1e18 in double precision.
NOT_SOLVED = {
    ("MGH09", "start1"): "no finite maximum found from this start",
    ("Eckerle4", "start1"): "no finite maximum found from this start",
    ("Poly10", "default"): "double precision cannot resolve",
    ("Poly10", "near"): "double precision cannot resolve",
}
#: Cases that take over ~10 s on two shared cores (long valleys, saddle escapes, runaways).
SLOW = {("MGH10", "start1"), ("MGH09", "start1"), ("Lanczos", "start1"), ("Lanczos1", "start1"),
        ("Lanczos1", "start2")}

_MODELS: dict[str, pm.Model] = {}


def _model(name):
    if name not in _MODELS:
        _MODELS[name] = pymc_model(BY_NAME[name])
    return _MODELS[name]


def _canonical(name, b):
    """Lanczos: the three exponentials are interchangeable; order the (amplitude, rate) pairs by
    rate before comparing (a fit at the optimum may return them in any order)."""
    b = np.asarray(b, dtype=float)
    if name.startswith("Lanczos"):
        pairs = sorted(zip(b[0::2], b[1::2], strict=True), key=lambda p: p[1])
        return np.array([v for p in pairs for v in p])
    return b


@pytest.mark.parametrize("name,start", [
    pytest.param(n, s, marks=pytest.mark.slow) if (n, s) in SLOW else (n, s) for n, s in CASES])
def test_hard_problem(name, start):
    prob = BY_NAME[name]
    ref = reference(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = mle_ppl.fit(_model(name), start=dict(zip(prob.names, prob.starts[start],
                                                       strict=True)), warn=False)
    est = _canonical(name, [fit.estimates[k] for k in prob.names])
    got = digits(est, _canonical(name, ref.b))
    got_sigma = digits(fit.estimates["sigma"], ref.sigma)
    if (name, start) in NOT_SOLVED:
        assert not fit.converged and not fit.trustworthy
        assert NOT_SOLVED[name, start] in " ".join(fit.warnings)
        assert fit.std_errors.isna().all()
        return
    # converged means right: >= 8 significant digits against the 80-digit reference (the
    # optimizer's final test is a step below 1e-6 standard errors, or 0.1 SE where rounding
    # stops progress; the references are exact to ~1e-25, so the tolerance is the optimizer's)
    assert fit.converged and fit.trustworthy, fit.warnings
    assert got >= 8, f"{name} from {start}: {got:.1f} digits"
    n = prob.y.size
    if name == "Lanczos1":
        # exact data: residuals ~1e-13 of y ~ 1 carry float64 rounding of ~1e-16 each (1e-3
        # relative), so sigma-hat, and the log-likelihood through log sigma, are known to ~3
        # digits by any double-precision method
        assert got_sigma >= 2
        return
    assert got_sigma >= 8, f"{name} from {start}: sigma {got_sigma:.1f} digits"
    # the log-likelihood at the MLE: -n/2 (log(2 pi RSS/n) + 1), RSS from the reference
    np.testing.assert_allclose(fit.loglik, -n / 2 * (np.log(2 * np.pi * ref.rss / n) + 1),
                               rtol=1e-12, atol=1e-9)


def test_references_are_strict_minima():
    # the stored references: gradient of the RSS vanishes to < 1e-20 (relative) and the scaled
    # Hessian is positive definite (a strict local minimum; the Poly10 design is singular to
    # double precision but not to 80 digits)
    for name in BY_NAME:
        ref = reference(name)
        # (Lanczos1: exact data, RSS 2.6e-25, so |g|·|b| / RSS magnifies; its Newton step in 80
        # digits still ended below 1e-22 relative like every other reference)
        assert ref.grad_rel < (1e-10 if name == "Lanczos1" else 1e-20), name
        assert ref.hess_min_eig > 0, name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Misra1a", "Eckerle4", "Lanczos"])
def test_stored_reference_is_reproduced(name):
    # recompute from scratch (80 digits); the stored JSON must agree to its printed precision
    fresh = compute_reference(name)
    stored = reference(name)
    np.testing.assert_allclose(fresh.b, stored.b, rtol=1e-14)
    np.testing.assert_allclose(fresh.sigma, stored.sigma, rtol=1e-14)


# --------------------------------------------------------------------------- units (issue 12.3)
@pytest.mark.parametrize("scale", [1e9, 1e-9, 1e-30, 1e30])
def test_boundary_detection_does_not_depend_on_units(scale):
    # an ordinary regression with y in other units: the same fit, scaled; log sigma is far from
    # 0 (about -69 for 1e-30) but the optimum is interior and the information positive definite
    rng = np.random.default_rng(5)
    x = rng.normal(size=50)
    y = 1.0 + 2.0 * x + rng.normal(size=50)
    fits = []
    for s in (1.0, scale):
        with pm.Model() as m:
            a = pm.Flat("a")
            b = pm.Flat("b")
            sigma = pm.HalfFlat("sigma")
            pm.Normal("y", a + b * x, sigma, observed=y * s)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fits.append(mle_ppl.fit(m))
    base, scaled = fits
    assert scaled.converged and scaled.trustworthy and scaled.warnings == ()
    # closed form: least squares scales exactly with y; 1e-10 relative covers rounding
    np.testing.assert_allclose(scaled.estimates.to_numpy(), base.estimates.to_numpy() * scale,
                               rtol=1e-10)
    np.testing.assert_allclose(scaled.std_errors.to_numpy(), base.std_errors.to_numpy() * scale,
                               rtol=1e-8)


def test_perfect_fit_is_never_trustworthy():
    # y exactly linear in x (to rounding): sigma -> 0, in any units. With exact zero residuals
    # the likelihood is unbounded (BoundaryWarning); with rounding-level residuals the optimum
    # sits at sigma ~ 1e-17 |y| where the NLL is rounding noise and Newton stalls. Either way the
    # fit is not converged and has no standard errors.
    x = np.linspace(0, 1, 20)
    for s in (1.0, 1e9):
        with pm.Model() as m:
            a = pm.Flat("a")
            b = pm.Flat("b")
            sigma = pm.HalfFlat("sigma")
            pm.Normal("y", a + b * x, sigma, observed=s * (0.5 + 0.25 * x))
        fit = mle_ppl.fit(m, warn=False)
        assert not fit.converged and not fit.trustworthy
        assert fit.std_errors.isna().all()
        assert fit.estimates["sigma"] < 1e-12 * s
