"""Predictions against statsmodels' get_prediction (delta method) and exact predictive quantiles."""

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import statsmodels.api as sm
from scipy import stats

import mle_ppl
from mle_ppl._src.engine import likelihood as L

RNG = np.random.default_rng(11)
N = 80
XD = np.column_stack([RNG.normal(size=N), RNG.uniform(0, 2, size=N)])
YD = 1.0 + XD @ [2.0, -1.0] + RNG.normal(0, 0.7, size=N)
XNEW = np.array([[0.0, 0.0], [1.0, 1.5], [-2.0, 0.3]])


@pytest.fixture(scope="module")
def ols():
    with pm.Model() as m:
        X = pm.Data("X", XD)
        y_obs = pm.Data("y_obs", YD)
        alpha = pm.Flat("alpha")
        beta = pm.Flat("beta", shape=2)
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", alpha + X @ beta, sigma, observed=y_obs)
    return mle_ppl.fit(m)


def test_mean_matches_statsmodels_and_restores_data(ols):
    pred = ols.predict({"X": XNEW})
    ref = sm.OLS(YD, sm.add_constant(XD)).fit().get_prediction(
        sm.add_constant(XNEW, has_constant="add")).summary_frame()
    np.testing.assert_allclose(pred["mean"], ref["mean"], rtol=1e-9)
    # statsmodels scales by s² = RSS/(n-k); the MLE's observed information uses RSS/n
    k = 3
    np.testing.assert_allclose(pred["std_err"], ref["mean_se"] * np.sqrt((N - k) / N), rtol=1e-7)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(pred["upper"] - pred["lower"], 2 * z * pred["std_err"])
    # the containers are restored: the likelihood is the fitted one again
    np.testing.assert_allclose(-ols.likelihood.value_and_grad(ols.x)[0], ols.loglik, rtol=1e-12)
    np.testing.assert_array_equal(ols.likelihood.model["X"].get_value(), XD)
    # no recompilation on a second call with a different number of rows
    before = L.COMPILE_COUNT
    again = ols.predict({"X": XNEW[:2]})
    assert L.COMPILE_COUNT == before and len(again) == 2
    # the fitted data by default
    np.testing.assert_allclose(ols.predict()["mean"],
                               sm.OLS(YD, sm.add_constant(XD)).fit().fittedvalues, rtol=1e-9)


def test_response_quantiles_match_normal(ols):
    pred = ols.predict({"X": XNEW}, kind="response", n_draws=4000,
                       parameter_uncertainty=False, random_seed=3)
    mu = ols.estimates["alpha"] + XNEW @ ols.estimates[["beta[0]", "beta[1]"]].to_numpy()
    s = ols.estimates["sigma"]
    # sample 2.5% quantile of 4000 normal draws: SE = sqrt(.025*.975)/(phi(z) sqrt(4000))
    # ≈ 0.042 σ; allow 4 SE
    tol = 4 * np.sqrt(0.025 * 0.975) / (stats.norm.pdf(1.96) * np.sqrt(4000)) * s
    np.testing.assert_allclose(pred["lower"], mu - 1.959964 * s, atol=tol)
    np.testing.assert_allclose(pred["upper"], mu + 1.959964 * s, atol=tol)
    np.testing.assert_allclose(pred["mean"], mu, atol=4 * s / np.sqrt(4000))
    same = ols.predict({"X": XNEW}, kind="response", n_draws=50, random_seed=5)
    again = ols.predict({"X": XNEW}, kind="response", n_draws=50, random_seed=5)
    pd.testing.assert_frame_equal(same, again)  # seeded


def test_missing_and_unknown_containers(ols):
    with pytest.raises(mle_ppl.DataError, match=r"lacks \['X'\]"):
        ols.predict({"y_obs": np.zeros(3)})
    with pytest.raises(mle_ppl.DataError, match="Did you mean 'X'"):
        ols.predict({"x": XNEW})
    with pytest.raises(mle_ppl.DataError, match=r"shape \(3, 3\)"):
        ols.predict({"X": np.ones((3, 3))})
    with pytest.raises(mle_ppl.MLEError, match="kind="):
        ols.predict({"X": XNEW}, kind="median")


def test_model_file_poisson_matches_statsmodels_glm():
    fit = mle_ppl.fit("poisson_exposure")
    table = fit.data
    new = table.drop(columns=["claims"]).iloc[:5].copy()
    new["exposure"] = [0.5, 1.0, 2.0, 1.0, 3.0]
    pred = fit.predict(new)
    X = sm.add_constant(table[["age", "urban"]].to_numpy(dtype=float))
    res = sm.GLM(table["claims"].to_numpy(), X, family=sm.families.Poisson(),
                 offset=np.log(table["exposure"].to_numpy())).fit(tol=1e-13)
    Xn = sm.add_constant(new[["age", "urban"]].to_numpy(dtype=float), has_constant="add")
    ref = res.get_prediction(Xn, offset=np.log(new["exposure"].to_numpy())).summary_frame()
    # both are delta-method standard errors of exp(eta) at the same MLE
    np.testing.assert_allclose(pred["mean"], ref["mean"], rtol=1e-8)
    np.testing.assert_allclose(pred["std_err"], ref["mean_se"], rtol=1e-6)
    with pytest.raises(mle_ppl.DataError, match="urban"):
        fit.predict(new.drop(columns=["urban"]))
