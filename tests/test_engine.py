"""The MLE engine against independent references: closed-form least squares, NIST certified values,
exact rational arithmetic, and statsmodels (Logit, GLM Poisson, MNLogit)."""

import json
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import statsmodels.api as sm
from _models import gaussian_linear, logistic, multinomial_logit, poisson

import mle_ppl
from mle_ppl._src.engine import likelihood as likmod

RNG = np.random.default_rng(20261125)


# --------------------------------------------------------------------------- Gaussian = OLS
@pytest.fixture(scope="module")
def ols_case():
    n, p = 120, 3
    X = RNG.normal(size=(n, p)) * [1.0, 10.0, 0.1]
    y = 0.5 + X @ [1.0, -0.2, 3.0] + RNG.normal(scale=0.7, size=n)
    m = gaussian_linear(X, y)
    return X, y, m, mle_ppl.fit(m)


def test_gaussian_mle_is_least_squares(ols_case):
    X, y, _, fit = ols_case
    A = np.column_stack([np.ones(len(y)), X])
    coef, rss, *_ = np.linalg.lstsq(A, y, rcond=None)
    n = len(y)
    sigma2 = rss[0] / n  # the MLE of sigma^2 is RSS/n (not RSS/(n-p))
    # well-conditioned design: agreement to ~1e-10 relative (float64 with cond(A) ~ 1e2)
    np.testing.assert_allclose(fit.theta[:4], coef, rtol=1e-10)
    np.testing.assert_allclose(fit.estimates["sigma"] ** 2, sigma2, rtol=1e-10)
    # observed-information SEs: sigma2 (A'A)^{-1} for the coefficients, sigma/sqrt(2n) for sigma
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(A.T @ A)))
    np.testing.assert_allclose(fit.std_errors.to_numpy()[:4], se, rtol=1e-8)
    np.testing.assert_allclose(fit.std_errors["sigma"], np.sqrt(sigma2 / (2 * n)), rtol=1e-8)
    # log-likelihood at the MLE: -n/2 (log(2 pi sigma2) + 1)
    np.testing.assert_allclose(fit.loglik, -n / 2 * (np.log(2 * np.pi * sigma2) + 1), rtol=1e-12)
    assert fit.converged and fit.trustworthy and fit.warnings == ()


def test_labels_use_coordinates(ols_case):
    fit = ols_case[3]
    assert fit.labels == ("alpha", "beta[x0]", "beta[x1]", "beta[x2]", "sigma")
    assert list(fit.table().columns) == ["estimate", "std_err", "z", "p_value", "ci_lower",
                                         "ci_upper"]


# NIST StRD Longley (public domain): certified values to 15 digits.
LONGLEY_B = [-3482258.63459582, 15.0618722713733, -0.358191792925910e-01, -2.02022980381683,
             -1.03322686717359, -0.511041056535807e-01, 1829.15146461355]
LONGLEY_SE = [890420.383607373, 84.9149257747669, 0.334910077722432e-01, 0.488399681651699,
              0.214274163161675, 0.226073200069370, 455.478499142212]
LONGLEY_RSD = 304.854073561965


@pytest.mark.parametrize("mode", ["auto", "FAST_RUN"])  # auto: the Python-VM mode here
@pytest.mark.parametrize("method", ["newton", "lbfgs"])
def test_longley_certified(method, mode):
    d = sm.datasets.longley.load_pandas().data
    cols = ["GNPDEFL", "GNP", "UNEMP", "ARMED", "POP", "YEAR"]
    fit = mle_ppl.fit(gaussian_linear(d[cols].to_numpy(), d.TOTEMP.to_numpy(), cols),
                      method=method, mode=mode)
    n, k = 16, 7
    # >= 9 significant digits on the estimates (the bar; Newton reaches ~11-12)
    np.testing.assert_allclose(fit.theta[:7], LONGLEY_B, rtol=1e-9)
    # certified SEs use s^2 = RSS/(n-k); the MLE's observed information uses RSS/n
    se = fit.std_errors.to_numpy()[:7] * np.sqrt(n / (n - k))
    np.testing.assert_allclose(se, LONGLEY_SE, rtol=1e-6)  # >= 5 digits required, 6 asserted
    np.testing.assert_allclose(fit.estimates["sigma"], LONGLEY_RSD * np.sqrt((n - k) / n),
                               rtol=1e-9)
    assert fit.trustworthy


def _exact_lstsq(A, y):
    """Least squares in exact rational arithmetic (normal equations over Fractions)."""
    A = [[Fraction(float(v)) for v in row] for row in A]
    y = [Fraction(float(v)) for v in y]
    p = len(A[0])
    M = [[sum(r[i] * r[j] for r in A) for j in range(p)] + [sum(r[i] * t for r, t in zip(A, y))]
         for i in range(p)]
    for c in range(p):  # Gauss-Jordan, exact
        piv = next(r for r in range(c, p) if M[r][c] != 0)
        M[c], M[piv] = M[piv], M[c]
        for r in range(p):
            if r != c and M[r][c] != 0:
                f = M[r][c] / M[c][c]
                M[r] = [a - f * b for a, b in zip(M[r], M[c])]
    return np.array([float(M[i][p] / M[i][i]) for i in range(p)])


def test_polynomial_in_year_ill_conditioned():
    # columns year and year^2 (scales 2e3 and 4e6, correlation 0.99999): the normal equations in
    # float64 lose ~12 digits; the reference is the exact rational least-squares solution.
    year = np.arange(1950.0, 2021.0)
    y = 3.0 + 0.02 * (year - 1985) - 0.001 * (year - 1985) ** 2 + RNG.normal(0, 0.05, len(year))
    X = np.column_stack([year, year**2])
    exact = _exact_lstsq(np.column_stack([np.ones_like(year), X]), y)
    fit = mle_ppl.fit(gaussian_linear(X, y, ["year", "year2"]))
    np.testing.assert_allclose(fit.theta[:3], exact, rtol=1e-9)
    assert fit.trustworthy


# --------------------------------------------------------------------------- GLMs vs statsmodels
@pytest.fixture(scope="module")
def logit_case():
    n = 400
    X = np.column_stack([np.ones(n), RNG.normal(size=(n, 3))])
    y = (RNG.random(n) < 1 / (1 + np.exp(-(X @ [-0.3, 1.0, -0.5, 0.25])))).astype(float)
    m = logistic(X, y)
    return X, y, m, mle_ppl.fit(m)


def test_logistic_vs_statsmodels(logit_case):
    X, y, _, fit = logit_case
    ref = sm.Logit(y, X).fit(method="newton", tol=1e-14, maxiter=100, disp=0)
    # both are converged Newton solutions: agreement is limited by float64 (~1e-10)
    np.testing.assert_allclose(fit.theta, ref.params, rtol=1e-8)
    np.testing.assert_allclose(fit.std_errors.to_numpy(), ref.bse, rtol=1e-6)
    np.testing.assert_allclose(fit.loglik, ref.llf, rtol=1e-12)
    np.testing.assert_allclose([fit.aic, fit.bic], [ref.aic, ref.bic], rtol=1e-12)


def test_poisson_vs_statsmodels_glm():
    n = 300
    X = np.column_stack([np.ones(n), RNG.normal(size=(n, 2))])
    expo = RNG.uniform(0.5, 3.0, n)
    y = RNG.poisson(expo * np.exp(X @ [0.2, 0.4, -0.3])).astype(float)
    fit = mle_ppl.fit(poisson(X, y, exposure=expo))
    ref = sm.GLM(y, X, family=sm.families.Poisson(), exposure=expo).fit(tol=1e-14)
    np.testing.assert_allclose(fit.theta, ref.params, rtol=1e-8)
    np.testing.assert_allclose(fit.std_errors.to_numpy(), ref.bse, rtol=1e-6)
    np.testing.assert_allclose(fit.loglik, ref.llf, rtol=1e-12)


def test_multinomial_logit_vs_statsmodels():
    n, k = 300, 3
    X = np.column_stack([np.ones(n), RNG.normal(size=(n, 2))])
    B = np.array([[0.0, 0.5, -0.5], [0.0, 1.0, 0.3], [0.0, -0.7, 0.8]])
    P = np.exp(X @ B)
    P /= P.sum(1, keepdims=True)
    y = np.array([RNG.choice(k, p=p) for p in P])
    fit = mle_ppl.fit(multinomial_logit(X, y, k))
    ref = sm.MNLogit(y, X).fit(method="newton", tol=1e-14, maxiter=100, disp=0)
    # statsmodels' params are (p, k-1) like our beta; both flatten row-major
    np.testing.assert_allclose(fit.theta, np.asarray(ref.params).ravel(), rtol=1e-8)
    np.testing.assert_allclose(fit.std_errors.to_numpy(), np.asarray(ref.bse).ravel(), rtol=1e-6)
    np.testing.assert_allclose(fit.loglik, ref.llf, rtol=1e-12)


@pytest.mark.parametrize("method", ["lbfgs", "gd"])
def test_other_methods_reach_the_same_optimum(logit_case, method):
    X, y, m, newton = logit_case
    fit = mle_ppl.fit(m, method=method, learning_rate=1.0, max_iter=20000, tol=1e-8)
    assert fit.converged
    # gd stops at |grad of mean NLL| < 1e-8: estimates within ~1e-6 of the Newton solution
    np.testing.assert_allclose(fit.theta, newton.theta, atol=1e-5 if method == "gd" else 1e-7)
    if method == "gd":
        hist = np.array(fit.history)
        assert len(hist) > 10 and hist[-1] <= hist[0] and np.all(np.diff(hist) <= 1e-12)


# --------------------------------------------------------------------------- compiled pieces
def test_gradient_and_hessian_are_exact_for_logistic(logit_case):
    X, y, m, _ = logit_case
    lik = mle_ppl.likelihood_for(m)
    x = np.array([0.1, -0.2, 0.3, 0.05])
    p = 1 / (1 + np.exp(-X @ x))
    f, g = lik.value_and_grad(x)
    # hand-derived: NLL = -sum(y log p + (1-y) log(1-p)), grad = -X'(y-p), H = X' diag(p(1-p)) X
    np.testing.assert_allclose(f, -np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)), rtol=1e-12)
    np.testing.assert_allclose(g, -X.T @ (y - p), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lik.hessian(x), X.T @ (X * (p * (1 - p))[:, None]), rtol=1e-10)


def test_gradient_and_hessian_vs_finite_differences(ols_case):
    lik = mle_ppl.likelihood_for(ols_case[2])
    x = np.array([0.3, 0.9, -0.1, 2.0, np.log(0.8)])
    _, g = lik.value_and_grad(x)
    h = 1e-5
    E = np.eye(len(x))
    g_fd = np.array([(lik.value(x + h * e) - lik.value(x - h * e)) / (2 * h) for e in E])
    H_fd = np.array([(lik.value_and_grad(x + h * e)[1] - lik.value_and_grad(x - h * e)[1])
                     / (2 * h) for e in E])
    # central differences: truncation O(h^2) ~ 1e-10 relative, rounding ~ eps*|f|/h ~ 1e-9
    np.testing.assert_allclose(g, g_fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lik.hessian(x), 0.5 * (H_fd + H_fd.T), rtol=1e-6, atol=1e-5)


def test_refit_on_new_data_does_not_recompile():
    X = RNG.normal(size=(50, 2))
    y = 1 + X @ [1.0, 2.0] + RNG.normal(size=50)
    m = gaussian_linear(X, y)
    first = mle_ppl.fit(m)
    count = likmod.COMPILE_COUNT
    X2 = RNG.normal(size=(80, 2))  # a different n: same structure
    y2 = -1 + X2 @ [0.5, 0.0] + RNG.normal(size=80)
    pm.set_data({"X": X2, "y_obs": y2}, model=m, coords={"obs": np.arange(80)})
    second = mle_ppl.fit(m)
    assert likmod.COMPILE_COUNT == count, "a refit on same-structure data recompiled"
    coef = np.linalg.lstsq(np.column_stack([np.ones(80), X2]), y2, rcond=None)[0]
    np.testing.assert_allclose(second.theta[:3], coef, rtol=1e-9)
    assert second.n_obs == 80 and first.n_obs == 50
    # the earlier fit still describes its own data (the containers are rebound, then restored)
    dt = first.to_datatree()
    assert dt.observed_data["y"].size == 50
    np.testing.assert_allclose(dt.log_likelihood["y"].values.sum(), first.loglik, rtol=1e-12)
    assert m["X"].get_value().shape == (80, 2)


# --------------------------------------------------------------------------- honest diagnostics
def test_separation_is_detected():
    x = np.linspace(-2, 2, 40)
    X = np.column_stack([np.ones_like(x), x])
    y = (x > 0.1).astype(float)  # complete separation
    with pytest.warns(mle_ppl.SeparationWarning, match="separation"):
        fit = mle_ppl.fit(logistic(X, y))
    assert not fit.trustworthy
    assert fit.std_errors.isna().all()
    assert fit.loglik > -1e-3  # the log-likelihood runs to 0


def test_quasi_separation_is_detected():
    x = np.r_[np.linspace(-2, 0, 20), np.linspace(0, 2, 20)]
    X = np.column_stack([np.ones_like(x), x])
    y = np.r_[np.zeros(20), np.ones(20)]
    y[19] = 1.0  # the tie at x = 0 has both outcomes: quasi-complete separation
    with pytest.warns(mle_ppl.SeparationWarning, match="quasi-complete|complete"):
        fit = mle_ppl.fit(logistic(X, y))
    assert fit.std_errors.isna().all()


def test_duplicated_column_is_not_identifiable():
    X = RNG.normal(size=(60, 2))
    X = np.column_stack([X, X[:, 1]])
    y = X[:, 0] + RNG.normal(size=60)
    with pytest.warns(mle_ppl.IdentifiabilityWarning, match=r"beta\[x1\].*beta\[x2\]"):
        fit = mle_ppl.fit(gaussian_linear(X, y))
    assert fit.std_errors.isna().all() and not fit.trustworthy
    d = fit.to_dict()
    assert d["warnings"] and d["parameters"]["beta[x1]"]["std_err"] is None


def test_single_point_normal_is_unbounded():
    with pm.Model() as m:
        mu = pm.Flat("mu")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu, sigma, observed=np.array([1.7]))
    with pytest.warns(mle_ppl.BoundaryWarning, match="sigma"):
        fit = mle_ppl.fit(m)
    assert not fit.trustworthy and np.isnan(fit.std_errors["sigma"])
    assert fit.estimates["sigma"] < 1e-6


def test_iteration_cap_is_reported(logit_case):
    with pytest.warns(mle_ppl.ConvergenceWarning, match="did not converge"):
        fit = mle_ppl.fit(logit_case[2], max_iter=1)
    assert not fit.converged and fit.std_errors.isna().all()


# --------------------------------------------------------------------------- bad input
def test_nan_in_data_names_variable_and_rows():
    # pm.Data itself refuses NaN; arrays written into the graph as constants reach us
    X = RNG.normal(size=(30, 2))
    X[[4, 9], 1] = np.nan
    with pm.Model() as m:
        beta = pm.Flat("beta", shape=2)
        pm.Normal("y", mu=X @ beta, sigma=1.0, observed=RNG.normal(size=30))
    with pytest.raises(mle_ppl.DataError, match=r"constant array of shape 30x2.*NaN.*\[4, 9\]"):
        mle_ppl.fit(m)


def test_infinite_observed_value():
    y = RNG.normal(size=30)
    y[3] = np.inf
    with pytest.raises(mle_ppl.DataError, match=r"'y' \(data container 'y_obs'\).*infinite.*\[3\]"):
        mle_ppl.fit(gaussian_linear(RNG.normal(size=(30, 2)), y))


def test_shape_mismatch_names_both_shapes():
    with pm.Model() as m:
        X = pm.Data("X", RNG.normal(size=(30, 2)))
        beta = pm.Flat("beta", shape=2)
        pm.Normal("y", X @ beta, 1.0, observed=RNG.normal(size=29))
    with pytest.raises(mle_ppl.DataError, match=r"y \(29,\).*X \(30, 2\)"):
        mle_ppl.fit(m)


def test_proper_priors_are_refused_unless_likelihood_only():
    with pm.Model() as m:
        mu = pm.Normal("mu", 0, 1)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", mu, sigma, observed=np.array([1.0, 2.0, 4.0]))
    with pytest.raises(mle_ppl.ModelError, match=r"mu \(Normal\), sigma \(HalfNormal\)"):
        mle_ppl.fit(m)
    fit = mle_ppl.fit(m, likelihood_only=True)
    assert "likelihood_only" in fit.notes[0]
    np.testing.assert_allclose(fit.estimates["mu"], 7 / 3, rtol=1e-10)
    np.testing.assert_allclose(fit.estimates["sigma"] ** 2, np.var([1.0, 2.0, 4.0]), rtol=1e-9)


def test_discrete_parameters_potentials_and_no_observed_are_refused():
    with pm.Model() as discrete:
        k = pm.DiscreteUniform("k", 0, 5)
        pm.Poisson("y", k + 1, observed=np.array([1, 2]))
    with pytest.raises(mle_ppl.ModelError, match=r"\['k'\] are discrete"):
        mle_ppl.fit(discrete)
    with pm.Model() as potential:
        mu = pm.Flat("mu")
        pm.Potential("pen", -(mu**2))
        pm.Normal("y", mu, 1, observed=np.array([1.0]))
    with pytest.raises(mle_ppl.ModelError, match="potentials"):
        mle_ppl.fit(potential)
    with pm.Model() as empty:
        pm.Flat("mu")
    with pytest.raises(mle_ppl.ModelError, match="no observed variable"):
        mle_ppl.fit(empty)


def test_missing_observed_values_are_refused():
    with pm.Model() as m:
        mu = pm.Flat("mu")
        with warnings.catch_warnings():
            # PyMC announces that it will impute the masked value: that is what we refuse.
            warnings.simplefilter("ignore", UserWarning)
            pm.Normal("y", mu, 1, observed=np.array([1.0, np.nan, 2.0]))
    with pytest.raises(mle_ppl.DataError,
                       match=r"missing values \(.y.: 1 value\(s\), row\(s\) \[1\] \(0-based"):
        mle_ppl.fit(m)


def test_unknown_method_lists_registry(ols_case):
    with pytest.raises(mle_ppl.MLEError, match=r"method='newtn'.*'gd', 'lbfgs', 'newton'.*"
                                               r"Did you mean 'newton'"):
        mle_ppl.fit(ols_case[2], method="newtn")


# --------------------------------------------------------------------------- the result object
def test_result_is_immutable_and_exports(ols_case):
    fit = ols_case[3]
    with pytest.raises(AttributeError):
        fit.loglik = 0.0
    with pytest.raises(ValueError):
        fit.theta[0] = 1.0
    d = json.loads(json.dumps(fit.to_dict()))
    assert set(d) >= {"model", "n_obs", "n_params", "method", "converged", "loglik", "aic", "bic",
                      "parameters", "diagnostics", "warnings"}
    assert set(d["diagnostics"]) >= {"grad_norm", "hessian_min_eig", "hessian_cond", "iterations"}
    assert d["parameters"]["sigma"]["estimate"] == pytest.approx(fit.estimates["sigma"])
    assert "beta[x1]" in str(fit) and "<table" in fit._repr_html_()
    ci90 = fit.conf_int(0.90)
    assert isinstance(ci90, pd.DataFrame) and list(ci90.columns) == ["lower", "upper"]
    assert (ci90["upper"] - ci90["lower"] < fit.conf_int(0.95)["upper"]
            - fit.conf_int(0.95)["lower"]).all()
    with pytest.raises(mle_ppl.MLEError, match="level"):
        fit.conf_int(1.5)
    assert fit.grad_norm < 1e-6 and fit.hessian_min_eig > 0 and fit.hessian_cond >= 1


def test_covariance_on_constrained_scale_by_delta_method(ols_case):
    fit = ols_case[3]
    # Var(sigma_hat) from the Hessian on sigma's own scale at the optimum: 2n/sigma^2 -> s^2/(2n)
    s = fit.estimates["sigma"]
    np.testing.assert_allclose(fit.cov.loc["sigma", "sigma"], s**2 / (2 * fit.n_obs), rtol=1e-8)


def test_to_datatree_works_with_arviz(ols_case):
    import arviz as az

    fit = ols_case[3]
    dt = fit.to_datatree()
    assert {"posterior", "fit", "optimizer_result", "log_likelihood", "observed_data",
            "constant_data"} <= set(dt.children)
    assert dt.posterior["beta"].dims == ("chain", "draw", "x")
    np.testing.assert_allclose(dt.posterior["sigma"].values.ravel(), fit.estimates["sigma"])
    np.testing.assert_allclose(dt.log_likelihood["y"].values.sum(), fit.loglik, rtol=1e-12)
    lap = fit.to_datatree(laplace_draws=400, random_seed=1)
    assert lap.posterior.sizes["draw"] == 400 and (lap.posterior["sigma"] > 0).all()
    summ = az.summary(lap, kind="stats")
    # Laplace draws: mean within 4 Monte Carlo SEs (SE/sqrt(400)) of the MLE
    se = fit.std_errors["beta[x0]"]
    assert abs(summ.loc["beta[x0]", "mean"] - fit.estimates["beta[x0]"]) < 4 * se / 20


def test_logp_sums_not_products():
    # 5000 Bernoulli observations: the product of probabilities underflows to 0.0 in float64,
    # the sum of log-probabilities does not.
    n = 5000
    y = (RNG.random(n) < 0.3).astype(float)
    with pm.Model() as m:
        p = pm.Uniform("p", 0, 1)
        pm.Bernoulli("y", p=p, observed=y)
    fit = mle_ppl.fit(m)
    np.testing.assert_allclose(fit.estimates["p"], y.mean(), rtol=1e-10)  # MLE = frequency
    assert np.prod(np.where(y == 1, y.mean(), 1 - y.mean())) == 0.0
    assert np.isfinite(fit.loglik)
    # SE of a proportion: sqrt(p(1-p)/n)
    np.testing.assert_allclose(fit.std_errors["p"], np.sqrt(y.mean() * (1 - y.mean()) / n),
                               rtol=1e-8)


def test_start_values_are_validated(ols_case):
    with pytest.raises(mle_ppl.MLEError, match="unknown parameters"):
        mle_ppl.fit(ols_case[2], start={"gamma": 1.0})
    fit = mle_ppl.fit(ols_case[2], start={"sigma": 5.0, "alpha": 1.0})
    np.testing.assert_allclose(fit.theta, ols_case[3].theta, rtol=1e-9)


