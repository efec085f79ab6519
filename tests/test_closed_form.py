"""Closed-form cross-checks: MLE ≡ least squares and MLE ≡ minimum cross-entropy.

Independent references: statsmodels (OLS, Logit, Probit, MNLogit, GLM Binomial), NumPy
``lstsq``, scikit-learn's ``log_loss``, SciPy's ``norm.logpdf``, pandas group frequencies and the
NIST StRD certified values for Longley. Tolerances are stated where used.
"""

import math
import warnings

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import special, stats
from sklearn.metrics import log_loss

import mle_ppl
from mle_ppl import ConvergenceWarning
from mle_ppl._src.report.reference import Problem, least_squares, newton_reference

# ------------------------------------------------------------------------------- builders


def _normal_model(p, n=10):
    """y ~ Normal(alpha + X @ beta, sigma); pm.Data, so pm.set_data refits without recompiling."""
    with pm.Model() as m:
        X = pm.Data("X", np.zeros((n, p)))
        y = pm.Data("y_obs", np.zeros(n))
        alpha = pm.Flat("alpha")
        beta = pm.Flat("beta", shape=p)
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu=alpha + X @ beta, sigma=sigma, observed=y)
    return m


def _logit_model(p, n=10):
    with pm.Model() as m:
        X = pm.Data("X", np.zeros((n, p)))
        y = pm.Data("y_obs", np.zeros(n, dtype="int64"))
        alpha = pm.Flat("alpha")
        beta = pm.Flat("beta", shape=p)
        pm.Bernoulli("y", logit_p=alpha + X @ beta, observed=y)
    return m


_MODELS: dict = {}


def _model(kind, p):
    """One compiled model per (kind, p), reused across hypothesis examples via pm.set_data."""
    key = (kind, p)
    if key not in _MODELS:
        _MODELS[key] = (_normal_model if kind == "normal" else _logit_model)(p)
    return _MODELS[key]


def _design(rng, n, p, log_scales):
    return rng.standard_normal((n, p)) * 10.0 ** np.asarray(log_scales[:p])


# ------------------------------------------------------------- regression: least squares


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(12, 60), p=st.integers(1, 3),
       log_scales=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_least_squares_identities_on_random_designs(n, p, log_scales, seed):
    rng = np.random.default_rng(seed)
    X = _design(rng, n, p, log_scales)
    beta = rng.standard_normal(p) / 10.0 ** np.asarray(log_scales[:p])
    y = 0.5 + X @ beta + rng.standard_normal(n)
    m = _model("normal", p)
    pm.set_data({"X": X, "y_obs": y}, model=m)
    fit = mle_ppl.fit(m)
    check = fit.closed_form()
    assert check.applies and check.kind == "least_squares"
    assert check.agrees, str(check)

    # Independent reference: statsmodels OLS on [1, X].
    ols = sm.OLS(y, sm.add_constant(X, has_constant="add")).fit()
    se = ols.bse * math.sqrt((n - p - 1) / n)  # MLE scale: σ̂² = RSS/n
    # The fit (Newton, decrement < 1e-10, then refinement) is within sqrt(2e-10) ≈ 1.4e-5 SE.
    assert np.all(np.abs(fit.theta[: p + 1] - ols.params) <= 2e-5 * se)
    # Our closed form (SVD) vs statsmodels (pinv): both backward stable; scales up to 1e6 apart
    # in the columns give coefficient errors ~ cond·eps in SE units, far below 1e-8 SE.
    cf = check.table()["closed_form"]
    labels = list(fit.labels[: p + 1])
    assert np.all(np.abs(cf[labels].to_numpy() - ols.params) <= 1e-8 * se)
    rss = float(ols.ssr)
    mse = rss / n
    assert check.extras["RSS"] == pytest.approx(rss, rel=1e-10)
    assert check.extras["s² = RSS/(n−p) (unbiased)"] == pytest.approx(ols.scale, rel=1e-10)
    # σ̂ = sqrt(RSS/n), and NLL(θ̂) = n/2·(log(2π·MSE) + 1) = −Σ norm.logpdf at the OLS solution.
    assert fit.values["sigma"] == pytest.approx(math.sqrt(mse), rel=1e-7)
    ll_ref = float(np.sum(stats.norm.logpdf(y, ols.fittedvalues, math.sqrt(mse))))
    assert -0.5 * n * (math.log(2 * math.pi * mse) + 1) == pytest.approx(ll_ref, abs=1e-9 * n)
    assert fit.loglik == pytest.approx(ll_ref, abs=1e-8 * n)


def test_least_squares_matches_nist_longley_certified_values():
    """Longley (NIST StRD, 'higher difficulty'): cond(X) ~ 1e9 before scaling."""
    longley = sm.datasets.longley.load_pandas()
    X = longley.exog.to_numpy()
    y = longley.endog.to_numpy()
    ls = least_squares(np.c_[np.ones(len(y)), X], y)
    certified = np.array([-3482258.63459582, 15.0618722713733, -0.358191792925910e-01,
                          -2.02022980381683, -1.03322686717359, -0.511041056535807e-01,
                          1829.15146461355])
    # NIST certifies 15 digits; an SVD on the equilibrated design loses ~cond·eps ≈ 1e-8 at worst.
    np.testing.assert_allclose(ls.coef, certified, rtol=1e-8)
    assert math.sqrt(ls.rss / (len(y) - 7)) == pytest.approx(304.854073561965, rel=1e-9)


def test_intercept_only_normal_is_mean_and_population_sd():
    y = np.array([1.0, 2.5, 4.0, 3.5, 0.5, 2.0])
    with pm.Model() as m:
        mu = pm.Flat("mu")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu, sigma, observed=y)
    check = mle_ppl.fit(m).closed_form()
    assert check.applies and check.agrees
    tab = check.table()
    # closed forms: ȳ and the ddof=0 standard deviation (rounding only: 1e-14 relative)
    assert tab.loc["mu", "closed_form"] == pytest.approx(np.mean(y), rel=1e-14)
    assert check.references["sigma"] == pytest.approx(np.std(y, ddof=0), rel=1e-14)
    assert check.extras["s² = RSS/(n−p) (unbiased)"] == pytest.approx(np.var(y, ddof=1),
                                                                      rel=1e-14)
    assert any("n/(n−p)" in n for n in check.notes)


def test_rank_deficient_design_compares_only_unique_quantities():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(30)
    X = np.c_[x, 2 * x]  # collinear: beta not identifiable
    y = 1 + x + rng.standard_normal(30)
    m = _normal_model(2, n=30)
    pm.set_data({"X": X, "y_obs": y}, model=m)
    with pytest.warns(mle_ppl.IdentifiabilityWarning):
        fit = mle_ppl.fit(m)
    check = fit.closed_form()
    assert check.applies
    assert "beta[0]" not in check.table().index
    assert any("rank 2 < 3" in n for n in check.notes)
    # The fitted values are unique: RSS equals OLS on the identifiable design [1, x].
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert check.extras["RSS"] == pytest.approx(ols.ssr, rel=1e-10)


# ------------------------------------------------------------ classification: cross-entropy


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(60, 150), p=st.integers(1, 3),
       log_scales=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_cross_entropy_identities_on_random_designs(n, p, log_scales, seed):
    rng = np.random.default_rng(seed)
    X = _design(rng, n, p, log_scales)
    beta = 0.7 * rng.standard_normal(p) / 10.0 ** np.asarray(log_scales[:p])
    y = (rng.random(n) < special.expit(0.3 + X @ beta)).astype("int64")
    m = _model("logit", p)
    pm.set_data({"X": X, "y_obs": y}, model=m)
    fit = mle_ppl.fit(m, warn=False)
    assume(fit.trustworthy)  # separation makes the MLE infinite: nothing to compare
    check = fit.closed_form()
    assert check.applies and check.kind == "cross_entropy" and check.link == "logit"
    assert check.agrees, str(check)
    # NLL(θ̂) = n·CE(θ̂), with CE from scikit-learn (independent code); pure rounding: 1e-10 rel.
    p_hat = special.expit(fit.values["alpha"] + X @ fit.values["beta"])
    assert -fit.loglik == pytest.approx(n * log_loss(y, p_hat, labels=[0, 1]), rel=1e-10)
    # The engine's θ̂ vs statsmodels' Logit (Newton): same optimum to 2e-5 SE (see the OLS test).
    ref = sm.Logit(y, sm.add_constant(X, has_constant="add")).fit(disp=0, method="newton",
                                                                   tol=1e-12, maxiter=100)
    assert np.all(np.abs(fit.theta - ref.params) <= 2e-5 * ref.bse)


def test_newton_reference_agrees_with_statsmodels_probit():
    rng = np.random.default_rng(7)
    X = np.c_[np.ones(200), rng.standard_normal((200, 2)) * [1.0, 100.0]]
    y = (rng.random(200) < special.ndtr(X @ [0.2, 0.8, -0.005])).astype("int64")
    with pm.Model() as m:
        b = pm.Flat("b", shape=3)
        pm.Bernoulli("y", p=pm.math.invprobit(pm.Data("X", X) @ b), observed=y)
    fit = mle_ppl.fit(m)
    check = fit.closed_form()
    assert check.link == "probit" and check.agrees, str(check)
    ref = sm.Probit(y, X).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    cf = check.table().loc[list(fit.labels), "closed_form"].to_numpy()
    # PyMC's invprobit uses a float32 √2, i.e. Φ((1 + 1.2e-8)·x): the coefficients differ from
    # an exact probit by that relative factor; statsmodels uses the exact Φ.
    np.testing.assert_allclose(cf, ref.params, rtol=5e-8)
    np.testing.assert_allclose(fit.theta, ref.params, rtol=5e-8)


def test_binomial_matches_statsmodels_glm():
    rng = np.random.default_rng(11)
    X = np.c_[np.ones(40), rng.standard_normal(40)]
    trials = rng.integers(1, 30, size=40)
    k = rng.binomial(trials, special.expit(X @ [-0.5, 0.8]))
    with pm.Model() as m:
        b = pm.Flat("b", shape=2)
        pm.Binomial("y", n=trials, logit_p=X @ b, observed=k)
    fit = mle_ppl.fit(m)
    check = fit.closed_form()
    assert check.family == "binomial" and check.agrees, str(check)
    glm = sm.GLM(np.c_[k, trials - k], X, family=sm.families.Binomial()).fit(tol=1e-12)
    assert np.all(np.abs(fit.theta - glm.params) <= 2e-5 * glm.bse)
    # statsmodels' loglik includes log C(n, k), as ours does (rounding: 1e-10 relative)
    assert fit.loglik == pytest.approx(glm.llf, rel=1e-10)


# Numba (PyTensor's default linker, used by PyMC for the model's initial-point function) warns
# once per process that it cannot cache a function holding a constant array; harmless here.
@pytest.mark.filterwarnings("ignore:Cannot cache compiled function:numba.core.errors.NumbaWarning")
def test_categorical_softmax_matches_statsmodels_mnlogit():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((150, 2))
    eta = np.c_[np.zeros(150), X @ [[1.0, -0.5], [0.3, 0.8]]]
    y = np.array([rng.choice(3, p=pr) for pr in special.softmax(eta, axis=1)])
    with pm.Model() as m:
        Xd = pm.Data("X", X)
        a = pm.Flat("a", shape=2)
        B = pm.Flat("B", shape=(2, 2))
        logits = pt.concatenate([pt.zeros((150, 1)), a + Xd @ B], axis=1)
        pm.Categorical("y", p=pm.math.softmax(logits, axis=-1), observed=y)
    fit = mle_ppl.fit(m)
    check = fit.closed_form()
    assert check.link == "softmax" and check.agrees, str(check)
    ref = sm.MNLogit(y, sm.add_constant(X)).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    # statsmodels params: rows (const, x1, x2) × columns (class 1, class 2)
    np.testing.assert_allclose(fit.values["a"], ref.params[0], atol=2e-5 * ref.bse[0].max())
    np.testing.assert_allclose(fit.values["B"], ref.params[1:], atol=2e-5 * ref.bse[1:].max())
    assert -fit.loglik == pytest.approx(150 * log_loss(y, ref.predict(), labels=[0, 1, 2]),
                                        rel=1e-9)


def test_saturated_designs_give_observed_frequencies():
    rng = np.random.default_rng(2)
    g = rng.integers(0, 3, size=120)
    y = (rng.random(120) < np.array([0.2, 0.5, 0.7])[g]).astype("int64")
    D = np.eye(3)[g]
    with pm.Model() as m:
        a = pm.Flat("a")
        b = pm.Flat("b", shape=2)
        pm.Bernoulli("y", logit_p=a + D[:, 1:] @ b, observed=y)
    fit = mle_ppl.fit(m)
    check = fit.closed_form()
    assert "frequencies" in check.reference and check.agrees, str(check)
    freq = pd.Series(y).groupby(g).mean()  # independent: pandas group means
    # a = logit(f0), b_j = logit(f_j) − logit(f0): rounding only (1e-12)
    np.testing.assert_allclose(check.references["a"], special.logit(freq[0]), rtol=1e-12)
    np.testing.assert_allclose(check.references["b"],
                               special.logit(freq[1:].to_numpy()) - special.logit(freq[0]),
                               rtol=1e-10)
    np.testing.assert_allclose(fit.values["a"], special.logit(freq[0]), atol=1e-6)


def test_intercept_only_categorical_gives_class_frequencies():
    y = np.array([0, 1, 1, 2, 2, 2, 0, 2, 1, 2])
    with pm.Model() as m:
        a = pm.Flat("a", shape=2)
        pm.Categorical("y", logit_p=pt.concatenate([[0.0], a]), observed=y)
    fit = mle_ppl.fit(m)
    check = fit.closed_form()
    assert check.agrees, str(check)
    f = np.bincount(y) / len(y)
    tab = check.table()
    np.testing.assert_allclose([tab.loc[f"P(y={k})", "closed_form"] for k in range(3)], f,
                               rtol=1e-15)
    np.testing.assert_allclose(check.references["a"], np.log(f[1:] / f[0]), rtol=1e-12)


def test_newton_reference_reports_separation_as_not_converged():
    X = np.c_[np.ones(6), [-3.0, -2, -1, 1, 2, 3]]
    problem = Problem("logit", X, np.zeros(6), np.array([0.0, 0, 0, 1, 1, 1]))
    assert not newton_reference(problem).converged


# ---------------------------------------------------------------------------- detection


def _fit(m, **kw):
    return mle_ppl.fit(m, **kw)


def test_detects_sigmoid_link_written_out():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(80)
    y = (rng.random(80) < special.expit(x)).astype("int64")
    with pm.Model() as m:
        b = pm.Flat("b")
        pm.Bernoulli("y", p=pm.math.sigmoid(0.1 + b * x), observed=y)
    check = _fit(m).closed_form()
    assert (check.kind, check.link) == ("cross_entropy", "logit")


@pytest.mark.parametrize("case", ["poisson", "nonlinear", "heteroscedastic", "bounded_coef",
                                  "two_observed"])
def test_no_closed_form_says_why(case):
    rng = np.random.default_rng(1)
    x = np.linspace(0, 2, 40)
    expected = {"poisson": "Poisson", "nonlinear": "not linear",
                "heteroscedastic": "varies across observations", "bounded_coef": "bounded",
                "two_observed": "2 observed variables"}[case]
    with pm.Model() as m:
        a = pm.Flat("a")
        if case == "poisson":
            pm.Poisson("y", mu=pt.exp(a + 0.5 * x), observed=rng.poisson(np.exp(0.5 * x)))
        elif case == "nonlinear":
            b = pm.Flat("b")
            s = pm.HalfFlat("s")
            pm.Normal("y", mu=a * pt.exp(b * x), sigma=s, observed=2 * np.exp(0.7 * x)
                      + 0.1 * rng.standard_normal(40))
        elif case == "heteroscedastic":
            g = pm.Flat("g")
            pm.Normal("y", mu=a, sigma=pt.exp(g * x), observed=rng.standard_normal(40) * (1 + x))
        elif case == "bounded_coef":
            b = pm.HalfFlat("b")
            s = pm.HalfFlat("s")
            pm.Normal("y", mu=a + b * x, sigma=s, observed=1 + x + rng.standard_normal(40))
        else:
            s = pm.HalfFlat("s")
            pm.Normal("y1", mu=a, sigma=s, observed=rng.standard_normal(40))
            pm.Normal("y2", mu=a, sigma=s, observed=rng.standard_normal(40))
    fit = _fit(m, warn=False)
    check = fit.closed_form()
    assert not check.applies and check.agrees is None
    assert expected in check.reason
    assert check.to_dict() == {"applies": False, "reason": check.reason}
    assert "no closed form applies" in str(check)


def test_changed_data_since_fit_is_detected_or_restored():
    m = _normal_model(1, n=5)
    pm.set_data({"X": np.arange(5.0)[:, None], "y_obs": np.array([0.0, 1.1, 1.9, 3.2, 3.9])},
                model=m)
    fit = mle_ppl.fit(m)
    pm.set_data({"y_obs": np.array([1.0, 1.1, 1.9, 3.2, 3.9])}, model=m)
    if hasattr(fit, "bound"):
        # the fit restores its own data while it is checked: the RSS is that of the fitted y
        rss = sm.OLS([0.0, 1.1, 1.9, 3.2, 3.9], sm.add_constant(np.arange(5.0))).fit().ssr
        assert fit.closed_form().extras["RSS"] == pytest.approx(rss, rel=1e-10)
    else:
        with pytest.raises(mle_ppl.MLEError, match="data changed since this fit"):
            fit.closed_form()


# ------------------------------------------------------------------- disagreement detection


@pytest.fixture(scope="module")
def linear_data():
    rng = np.random.default_rng(42)
    X = rng.standard_normal((50, 2))
    y = 1.0 + X @ [2.0, -1.0] + 0.5 * rng.standard_normal(50)
    return X, y


@pytest.fixture(scope="module")
def logistic_data():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((100, 2))
    y = (rng.random(100) < special.expit(0.5 + X @ [1.5, -1.0])).astype("int64")
    return X, y


@pytest.mark.parametrize("kind,method,max_iter", [("normal", "gd", 5), ("logit", "newton", 1),
                                                  ("logit", "lbfgs", 2), ("logit", "gd", 10)])
def test_early_stopped_optimizer_is_detected(linear_data, logistic_data, kind, method, max_iter):
    X, y = linear_data if kind == "normal" else logistic_data
    m = _model(kind, 2)
    pm.set_data({"X": X, "y_obs": y}, model=m)
    with pytest.warns(ConvergenceWarning), warnings.catch_warnings():
        # Far from the optimum the observed information of (alpha, beta, sigma) can be
        # indefinite, so an IdentifiabilityWarning may come too; it is not what is tested here.
        warnings.simplefilter("ignore", mle_ppl.IdentifiabilityWarning)
        fit = mle_ppl.fit(m, method=method, max_iter=max_iter)
    check = fit.closed_form()
    assert check.applies and check.agrees is False
    assert "DISAGREEMENT" in str(check)
    bad = check.table().query("not agrees")
    assert len(bad) >= 1
    assert (bad["abs_diff"] > bad["tol"]).all()


def test_tolerance_is_configurable_and_validated(linear_data):
    X, y = linear_data
    m = _model("normal", 2)
    pm.set_data({"X": X, "y_obs": y}, model=m)
    fit = mle_ppl.fit(m)
    strict = fit.closed_form(se_tol=1e-12, loglik_tol=1e-12)
    assert fit.closed_form().agrees
    assert all(r.tol_rule.startswith("1e-12") or "relative" in r.tol_rule
               or "Δloglik" in r.tol_rule for r in strict.rows)
    with pytest.raises(mle_ppl.MLEError, match="must be positive"):
        fit.closed_form(se_tol=0)


# ---------------------------------------------------------------------- reporting / ArviZ


@pytest.fixture(scope="module")
def linear_fit():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 2))
    y = 1.0 + X @ [2.0, -1.0] + 0.5 * rng.standard_normal(40)
    with pm.Model(coords={"x": ["x1", "x2"]}) as m:
        Xd = pm.Data("X", X, dims=("obs", "x"))
        alpha = pm.Flat("alpha")
        beta = pm.Flat("beta", dims="x")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu=alpha + Xd @ beta, sigma=sigma, observed=y, dims="obs")
    return mle_ppl.fit(m), X, y


def test_result_object_is_immutable_and_renders(linear_fit):
    fit, _, _ = linear_fit
    check = fit.closed_form()
    assert check is fit.closed_form()  # cached per fit and tolerances
    with pytest.raises(AttributeError):
        check.applies = False
    with pytest.raises(TypeError):
        check.extras["RSS"] = 0.0
    with pytest.raises(ValueError):
        check.references["beta"][0] = 0.0
    tab = check.table()
    assert list(tab.columns) == ["mle", "closed_form", "abs_diff", "rel_diff", "tol", "tol_rule",
                                 "agrees"]
    assert "beta[x1]" in tab.index and "least_squares" in str(check)
    assert "<table" in check._repr_html_()


def test_to_dict_has_closed_form_and_keeps_section3_keys(linear_fit):
    import json

    fit, _, _ = linear_fit
    doc = fit.to_dict()
    for key in ("model", "n_obs", "n_params", "method", "converged", "loglik", "aic", "bic",
                "parameters", "diagnostics", "warnings"):
        assert key in doc
    cf = doc["closed_form"]
    assert cf["applies"] and cf["agrees"] and cf["kind"] == "least_squares"
    assert {r["quantity"] for r in cf["rows"]} >= {"alpha", "beta[x1]", "beta[x2]"}
    json.dumps(doc, allow_nan=False)


def test_datatree_closed_form_group_holds_reference_values(linear_fit):
    fit, X, y = linear_fit
    dt = fit.to_datatree()
    ref = dt["closed_form"].to_dataset()
    post = dt["posterior"].to_dataset()
    assert set(ref.data_vars) == {"alpha", "beta", "sigma"}
    assert ref["beta"].dims == ("x",) and list(ref["x"].values) == ["x1", "x2"]
    assert ref["beta"].dims == post["beta"].isel(chain=0, draw=0).dims
    ols = sm.OLS(y, sm.add_constant(X)).fit()
    np.testing.assert_allclose(ref["beta"].values, ols.params[1:], rtol=1e-10)
    assert ref["sigma"].item() == pytest.approx(math.sqrt(ols.ssr / len(y)), rel=1e-12)
    assert ref.attrs["applies"] == 1 and ref.attrs["agrees"] == 1
    checks = dt["closed_form/checks"].to_dataset()
    assert bool(checks["agrees"].all())


def test_plot_closed_form_draws_reference_lines_at_the_closed_form(linear_fit):
    import matplotlib.pyplot as plt

    fit, X, y = linear_fit
    pc = fit.plot_closed_form(laplace_draws=200, random_seed=1)
    fig = pc.viz["figure"].item()
    ols = sm.OLS(y, sm.add_constant(X)).fit()
    expected = [*ols.params, math.sqrt(ols.ssr / len(y))]
    xs = [line.get_xdata()[0] for ax in fig.axes for line in ax.get_lines()
          if len(set(np.atleast_1d(line.get_xdata()))) == 1 and line.get_linestyle() == "--"]
    for v in expected:
        assert any(abs(x - v) <= 1e-9 * max(1.0, abs(v)) for x in xs), (v, xs)
    # the dashed line, the density and the dot-and-bar are in the key (issue 12)
    keys = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "closed form (least squares)" in keys
    assert any(k.startswith("Laplace approximation at the MLE") for k in keys)
    assert "its mean and 95% HDI" in keys
    # no rounded "-3500000.0 mean" text on the panels
    assert not any("mean" in t.get_text() for ax in fig.axes for t in ax.texts)
    plt.close(fig)


def test_plot_closed_form_refuses_when_nothing_applies():
    with pm.Model() as m:
        a = pm.Flat("a")
        pm.Poisson("y", mu=pt.exp(a), observed=np.array([1, 2, 3]))
    with pytest.raises(mle_ppl.MLEError, match="no closed form applies"):
        mle_ppl.fit(m).plot_closed_form()
