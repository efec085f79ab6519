"""Every bundled model, fitted on its bundled data, against an independent reference.

References: NIST StRD certified values (Longley), statsmodels (Logit, MNLogit, GLM,
NegativeBinomial), scipy (least_squares, minimize on an independently written negative
log-likelihood) and statsmodels' numerical Hessian for standard errors. Tolerances are stated
next to each comparison.
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, special, stats
from statsmodels.tools.numdiff import approx_hess

import mle_ppl

REFERENCED = {"linear_regression", "logistic_regression", "multinomial_logistic",
              "poisson_exposure", "negative_binomial", "robust_regression", "exponential_decay",
              "heteroscedastic", "binomial_trials", "linear_mixed", "binomial_mixed"}

_FITS: dict = {}


def _fit(name):
    if name not in _FITS:
        _FITS[name] = mle_ppl.fit(name)
    return _FITS[name]


def _data(name):
    return mle_ppl.load_model(name).default_data()


def test_every_bundled_model_has_a_reference_test():
    assert {n for n, _ in mle_ppl.list_models()} == REFERENCED


def _numerical_se(nll, theta):
    """Standard errors from a central-difference Hessian of an independent NLL."""
    return np.sqrt(np.diag(np.linalg.inv(approx_hess(np.asarray(theta, dtype=float), nll))))


# NIST StRD, Longley, certified values (https://www.itl.nist.gov/div898/strd/lls/data/Longley.shtml)
NIST_BETA = [-3482258.63459582, 15.0618722713733, -0.358191792925910e-01, -2.02022980381683,
             -1.03322686717359, -0.511041056535807e-01, 1829.15146461355]
NIST_SD = [890420.383607373, 84.9149257747669, 0.334910077722432e-01, 0.488399681651699,
           0.214274163161675, 0.226073200069370, 455.478499142212]
NIST_RESID_SD = 304.854073561965


def test_linear_regression_matches_nist_longley():
    fit = _fit("linear_regression")
    assert fit.converged and fit.trustworthy
    # Longley's design is ill-conditioned (condition number ~1e9 after centring the intercept);
    # good float64 least squares keeps ~8 significant digits against the certified values.
    np.testing.assert_allclose(fit.theta[:7], NIST_BETA, rtol=1e-7)
    n, p = 16, 7
    # NIST's standard errors use s^2 = RSS/(n - p); the MLE's observed information uses RSS/n.
    scale = np.sqrt((n - p) / n)
    np.testing.assert_allclose(fit.std_errors.to_numpy()[:7], np.array(NIST_SD) * scale,
                               rtol=1e-6)
    assert fit.estimates["sigma"] == pytest.approx(NIST_RESID_SD * scale, rel=1e-7)
    assert list(fit.labels[:3]) == ["alpha", "beta[GNPDEFL]", "beta[GNP]"]


def test_logistic_regression_vs_statsmodels():
    fit = _fit("logistic_regression")
    df = _data("logistic_regression")
    ref = sm.Logit(df.y, sm.add_constant(df[["x1", "x2"]])).fit(disp=0, method="newton",
                                                                  tol=1e-12)
    # Two Newton optima of the same concave log-likelihood: 1e-7 relative.
    np.testing.assert_allclose(fit.theta, ref.params, rtol=1e-7)
    np.testing.assert_allclose(fit.std_errors, ref.bse, rtol=1e-6)
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-12)
    # the MLE minimises the cross-entropy: NLL / n = mean log loss at the estimate
    p = special.expit(sm.add_constant(df[["x1", "x2"]]).to_numpy() @ fit.theta)
    log_loss = -np.mean(df.y * np.log(p) + (1 - df.y) * np.log1p(-p))
    assert -fit.loglik / fit.n_obs == pytest.approx(log_loss, rel=1e-12)


def test_multinomial_logistic_vs_statsmodels():
    fit = _fit("multinomial_logistic")
    df = _data("multinomial_logistic")
    y = pd.Categorical(df.species, categories=["setosa", "versicolor", "virginica"]).codes
    ref = sm.MNLogit(y, sm.add_constant(df[["sepal_length"]])).fit(disp=0, method="newton",
                                                                     tol=1e-12)
    est = fit.estimates
    mine = np.array([[est["alpha[versicolor]"], est["alpha[virginica]"]],
                     [est["beta[sepal_length, versicolor]"],
                      est["beta[sepal_length, virginica]"]]])
    np.testing.assert_allclose(mine, ref.params, rtol=1e-6)  # same concave problem, Newton
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-10)
    se = fit.std_errors
    mine_se = np.array([[se["alpha[versicolor]"], se["alpha[virginica]"]],
                        [se["beta[sepal_length, versicolor]"],
                         se["beta[sepal_length, virginica]"]]])
    np.testing.assert_allclose(mine_se, ref.bse, rtol=1e-5)


def test_poisson_exposure_vs_statsmodels():
    fit = _fit("poisson_exposure")
    df = _data("poisson_exposure")
    ref = sm.GLM(df.claims, sm.add_constant(df[["age", "urban"]]),
                 family=sm.families.Poisson(), exposure=df.exposure).fit(tol=1e-12)
    np.testing.assert_allclose(fit.theta, ref.params, rtol=1e-7)  # IRLS vs Newton, concave
    np.testing.assert_allclose(fit.std_errors, ref.bse, rtol=1e-5)  # canonical link: E = O
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-12)


# PyTensor's numba backend runs the trigamma function (in the Hessian of the negative binomial's
# log-likelihood in alpha) in object mode and says so with a UserWarning; the values are exact.
@pytest.mark.filterwarnings("ignore:Numba will use object mode:UserWarning")
def test_negative_binomial_vs_statsmodels():
    fit = _fit("negative_binomial")
    df = _data("negative_binomial")
    X = np.column_stack([np.ones(len(df)), df.x, df.treated, df.group == "south",
                         df.group == "west"]).astype(float)
    ref = sm.NegativeBinomial(df.visits.to_numpy(), X, loglike_method="nb2").fit(
        disp=0, method="newton", maxiter=200, tol=1e-12)
    beta = fit.theta[:5]
    np.testing.assert_allclose(beta, ref.params[:5], rtol=1e-6)
    # statsmodels' NB2 has var = mu + a mu^2; PyMC's alpha is 1/a.
    assert 1 / fit.estimates["alpha"] == pytest.approx(ref.params[5], rel=1e-6)
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-10)
    np.testing.assert_allclose(fit.std_errors.to_numpy()[:5], ref.bse[:5], rtol=1e-4)
    assert list(fit.labels) == ["beta[Intercept]", "beta[x]", "beta[treated]",
                                "beta[C(group)[T.south]]", "beta[C(group)[T.west]]", "alpha"]


def test_robust_regression_vs_scipy():
    fit = _fit("robust_regression")
    df = _data("robust_regression")
    X = sm.add_constant(df[["AIRFLOW", "WATERTEMP", "ACIDCONC"]]).to_numpy()
    y = df.STACKLOSS.to_numpy()

    def nll(t):
        return -stats.t.logpdf(y, 4, loc=X @ t[:4], scale=np.exp(t[4])).sum()

    ols = np.linalg.lstsq(X, y, rcond=None)[0]
    ref = optimize.minimize(nll, np.r_[ols, 1.0], method="BFGS", options={"gtol": 1e-9})
    theta_ref = np.r_[ref.x[:4], np.exp(ref.x[4])]
    # BFGS stalls near 1e-6 absolute on this badly scaled design (intercept -40, regressors
    # ~80), so compare in units of the standard error: well below 1e-3 SE is the same optimum.
    # The log-likelihoods agree to 1e-9 relative (PyMC's and scipy's Student-t log densities
    # differ by ~5e-10 per observation), and scipy's own NLL is no lower at scipy's optimum
    # than at ours.
    np.testing.assert_array_less(np.abs(fit.theta - theta_ref), 1e-3 * fit.std_errors)
    assert fit.loglik == pytest.approx(-ref.fun, rel=1e-9)
    ours = nll(np.r_[fit.theta[:4], np.log(fit.theta[4])])
    assert ours <= ref.fun + 1e-12

    def nll_user(t):  # on the user's scale (sigma itself) for standard errors
        return -stats.t.logpdf(y, 4, loc=X @ t[:4], scale=t[4]).sum()

    # central differences: ~1e-4 relative accuracy
    np.testing.assert_allclose(fit.std_errors, _numerical_se(nll_user, fit.theta), rtol=1e-3)


def test_exponential_decay_vs_least_squares():
    fit = _fit("exponential_decay")
    df = _data("exponential_decay")
    t, y = df.t.to_numpy(), df.y.to_numpy()
    ref = optimize.least_squares(lambda p: p[0] * np.exp(-p[1] * t) + p[2] - y, [1, 1, 0],
                                 xtol=1e-15, ftol=1e-15, gtol=1e-15)
    # Both solve the same smooth least-squares problem to machine tolerance: 1e-7 relative.
    np.testing.assert_allclose(fit.theta[:3], ref.x, rtol=1e-7)
    # MLE of sigma: sqrt(RSS / n)
    assert fit.estimates["sigma"] == pytest.approx(np.sqrt(2 * ref.cost / len(y)), rel=1e-7)

    def nll(p):
        return -stats.norm.logpdf(y, p[0] * np.exp(-p[1] * t) + p[2], p[3]).sum()

    np.testing.assert_allclose(fit.std_errors, _numerical_se(nll, fit.theta), rtol=1e-3)


def test_heteroscedastic_vs_scipy():
    fit = _fit("heteroscedastic")
    df = _data("heteroscedastic")
    x, y = df.x.to_numpy(), df.y.to_numpy()

    def nll(p):
        return -stats.norm.logpdf(y, p[0] + p[1] * x, np.exp(p[2] + p[3] * x)).sum()

    ref = optimize.minimize(nll, np.zeros(4), method="BFGS", options={"gtol": 1e-9})
    np.testing.assert_allclose(fit.theta, ref.x, rtol=1e-5)  # BFGS to gtol 1e-9: ~1e-6
    assert fit.loglik == pytest.approx(-ref.fun, rel=1e-10)
    np.testing.assert_allclose(fit.std_errors, _numerical_se(nll, fit.theta), rtol=1e-3)


def test_binomial_trials_vs_statsmodels():
    fit = _fit("binomial_trials")
    df = _data("binomial_trials")
    X = np.column_stack([np.ones(len(df)), df.dose, df.variety == "b"]).astype(float)
    endog = np.column_stack([df.germinated, df.seeds - df.germinated])
    ref = sm.GLM(endog, X, family=sm.families.Binomial()).fit(tol=1e-12)
    np.testing.assert_allclose(fit.theta, ref.params, rtol=1e-7)  # IRLS vs Newton, concave
    np.testing.assert_allclose(fit.std_errors, ref.bse, rtol=1e-5)  # canonical link
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-12)  # both include log C(n, k)


@pytest.mark.parametrize("name", sorted(REFERENCED))
def test_priors_build_for_the_bayesian_fit(name):
    """Each bundled model's [priors] build a proper-prior model of the same parameters."""
    spec = mle_ppl.load_model(name)
    assert spec.priors, f"{name} has no [priors] table"
    m = spec.build_model(spec.default_data(), priors=spec.priors)
    flat = spec.model_for(spec.default_data())[0]
    assert [rv.name for rv in m.free_RVs] == [rv.name for rv in flat.free_RVs]
    flat_ops = ("FlatRV", "HalfFlatRV", "UniformRV")  # Uniform(-1, 1): a flat correlation
    proper = {rv.name for rv in m.free_RVs if type(rv.owner.op).__name__ not in flat_ops}
    # random effects keep their own distribution (their scale parameters may stay flat)
    assert proper - set(spec.random_names) == set(spec.priors)


@pytest.mark.slow  # the correlated-effects Laplace fit: minutes on a loaded 2-core machine
def test_linear_mixed_vs_statsmodels_mixedlm():
    """Gaussian LMM, correlated random intercept and slope: the Laplace marginal is exact, so the
    fit is statsmodels' MixedLM(reml=False) maximum."""
    import statsmodels.formula.api as smf

    fit = _fit("linear_mixed")
    df = _data("linear_mixed")
    ref = smf.mixedlm("reaction ~ days", df, groups=df["subject"], re_formula="~days").fit(
        reml=False, method="lbfgs")
    assert fit.converged and fit.trustworthy
    # issue 14's bar: loglik 1e-6 relative, fixed effects 1e-6, variance components 1e-4
    # (statsmodels' L-BFGS stops ~1e-7 relative from the optimum in the variance parameters)
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-6)
    est = fit.estimates
    np.testing.assert_allclose([est["beta[Intercept]"], est["beta[days]"]], ref.fe_params,
                               rtol=1e-6)
    cov_re = ref.cov_re.to_numpy()
    sd = np.array([est["sd_subject[Intercept]"], est["sd_subject[days]"]])
    np.testing.assert_allclose(sd**2, np.diag(cov_re), rtol=1e-4)
    # the correlation (near 0 here) to 1e-4 absolute: a relative tolerance on a covariance of
    # 3.5 next to variances of 620 and 33 would ask for more than either optimizer's accuracy
    rho_ref = cov_re[0, 1] / np.sqrt(cov_re[0, 0] * cov_re[1, 1])
    assert est["rho_subject"] == pytest.approx(rho_ref, abs=1e-4)
    assert est["sigma"] ** 2 == pytest.approx(ref.scale, rel=1e-4)
    assert fit.loglik >= ref.llf - 1e-9  # ours is the higher maximum (by ~4e-10)
    # the conditional modes are statsmodels' BLUPs (1e-4: they follow the variance components)
    blup = np.array([ref.random_effects[s].to_numpy() for s in sorted(ref.random_effects)])
    modes = fit.random_effects.mode.reshape(-1, 2)
    np.testing.assert_allclose(modes, blup, rtol=1e-4, atol=1e-4 * np.abs(blup).max())


def _laplace_binomial(theta, y, n, period, herd, n_nodes=1):
    """Independent marginal log-likelihood of the binomial GLMM (NumPy/SciPy): per herd, a
    Newton search for the mode of the integrand, then adaptive Gauss-Hermite with ``n_nodes``
    nodes (1 node = the Laplace approximation; many nodes = the exact integral)."""
    alpha, b, s = theta[0], np.r_[0.0, theta[1:4]], theta[4]
    eta0 = alpha + b[period]
    h = pd.factorize(herd, sort=True)[0]
    n_h = h.max() + 1

    def per_herd(v):
        return np.bincount(h, weights=v, minlength=n_h)

    u = np.zeros(n_h)
    for _ in range(100):  # Newton on each herd's effect, all herds at once
        p = special.expit(eta0 + u[h])
        step = (per_herd(y - n * p) - u / s**2) / (per_herd(n * p * (1 - p)) + 1 / s**2)
        u += step
        if np.abs(step).max() < 1e-14:
            break
    p = special.expit(eta0 + u[h])
    sd = 1 / np.sqrt(per_herd(n * p * (1 - p)) + 1 / s**2)
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    vals = []
    for z in nodes:
        t = u + np.sqrt(2) * sd * z
        vals.append(per_herd(stats.binom.logpmf(y, n, special.expit(eta0 + t[h])))
                    + stats.norm.logpdf(t, 0, s) + z**2)
    per = special.logsumexp(np.array(vals), b=weights[:, None], axis=0)
    return float(np.sum(per + np.log(np.sqrt(2) * sd)))


def test_binomial_mixed_vs_independent_laplace_and_quadrature():
    fit = _fit("binomial_mixed")
    df = _data("binomial_mixed")
    y, n = df.incidence.to_numpy(), df["size"].to_numpy()
    period, herd = df.period.to_numpy() - 1, df.herd.to_numpy()
    assert fit.converged and fit.trustworthy
    theta = fit.theta
    # the same Laplace approximation, computed independently: 1e-9 relative
    lap = _laplace_binomial(theta, y, n, period, herd)
    assert fit.loglik == pytest.approx(lap, rel=1e-9)

    def nll(t):
        return -_laplace_binomial(np.r_[t[:4], np.exp(t[4])], y, n, period, herd)

    ref = optimize.minimize(nll, np.r_[theta[:4], np.log(theta[4])] + 0.05, method="BFGS",
                            options={"gtol": 1e-7})
    # BFGS on a numerical gradient: ~1e-5 absolute; compare in units of the standard error
    ref_theta = np.r_[ref.x[:4], np.exp(ref.x[4])]
    np.testing.assert_array_less(np.abs(theta - ref_theta), 1e-3 * fit.std_errors)
    assert -ref.fun <= fit.loglik + 1e-9
    # Laplace's error on this model: adaptive Gauss-Hermite with 25 nodes is the exact integral
    # to ~1e-10 (it changes by less than that from 25 to 40 nodes); Laplace is ~0.01 off.
    exact = _laplace_binomial(theta, y, n, period, herd, n_nodes=25)
    assert exact == pytest.approx(_laplace_binomial(theta, y, n, period, herd, n_nodes=40),
                                  abs=1e-9)
    assert 0 < abs(exact - fit.loglik) < 0.05
