"""mle_ppl.compare: MLE vs NUTS posterior, checked against closed-form flat-prior posteriors.

Reference (independent of PyMC and of our code): Gaussian linear regression y = Xβ + ε with the
flat prior p(β, σ) ∝ 1 (what pm.Flat / pm.HalfFlat mean). Integrating out gives, with k columns
in X (intercept included), RSS the least-squares residual sum of squares and n rows:

- β | y is multivariate t with ν = n − k − 1 degrees of freedom, centred at the least-squares
  estimate (= the MLE), covariance RSS/(ν − 2)·(X'X)⁻¹. The MLE's covariance is RSS/n·(X'X)⁻¹,
  so posterior sd / SE = sqrt(n / (n − k − 3)) exactly.
- σ² | y is inverse-gamma(a = (n − k − 1)/2, b = RSS/2), so E[σ] = sqrt(b)·Γ(a − ½)/Γ(a).
- Leave-one-out predictive of y_i: Student t with ν_i = n − 1 − k − 1 dof, location x_i'β̂₍₋ᵢ₎,
  scale² = RSS₍₋ᵢ₎/ν_i · (1 + x_i'(X₍₋ᵢ₎'X₍₋ᵢ₎)⁻¹x_i): the exact ELPD-LOO, by n refits in NumPy.

Monte Carlo tolerances: |posterior estimate − exact| < 4 MCSE (arviz-stats' MCSE of the mean
and of the sd), fixed seeds.
"""

import json
import math

import numpy as np
import pymc as pm
import pytest
import xarray as xr
from _models import gaussian_linear
from scipy import special, stats

import mle_ppl

DRAWS, TUNE, CHAINS = 600, 500, 2


def _exact_loo(X1, y):
    n, k = X1.shape
    total = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        Xi, yi = X1[keep], y[keep]
        beta, *_ = np.linalg.lstsq(Xi, yi, rcond=None)
        rss = float(np.sum((yi - Xi @ beta) ** 2))
        nu = (n - 1) - k - 1
        h = X1[i] @ np.linalg.solve(Xi.T @ Xi, X1[i])
        scale = math.sqrt(rss / nu * (1 + h))
        total += stats.t.logpdf(y[i], df=nu, loc=X1[i] @ beta, scale=scale)
    return total


@pytest.fixture(scope="module")
def gaussian():
    rng = np.random.default_rng(20240601)
    n = 200
    X = rng.normal(size=(n, 2))
    y = 1.0 + X @ np.array([0.5, -1.0]) + rng.normal(scale=0.8, size=n)
    model = gaussian_linear(X, y, ["a", "b"])
    fit = mle_ppl.fit(model)
    post = mle_ppl.sample(model, draws=DRAWS, tune=TUNE, chains=CHAINS, cores=1,
                          random_seed=11)
    cmp = mle_ppl.compare(fit, post, random_seed=3)
    X1 = np.column_stack([np.ones(n), X])
    return {"X1": X1, "y": y, "fit": fit, "post": post, "cmp": cmp}


def test_table_layout_and_labels(gaussian):
    cmp, fit = gaussian["cmp"], gaussian["fit"]
    tab = cmp.table
    assert list(tab.index) == list(fit.labels) == ["alpha", "beta[a]", "beta[b]", "sigma"]
    assert tuple(tab.columns) == mle_ppl._src.bayes.compare.COLUMNS
    np.testing.assert_allclose(tab["mle"], fit.estimates, rtol=0, atol=0)
    np.testing.assert_allclose(tab["std_err"], fit.std_errors, rtol=0, atol=0)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(tab["wald_upper"] - tab["wald_lower"], 2 * z * tab["std_err"],
                               rtol=1e-12)
    # the HDI is computed by arviz-stats on the same draws: compare with a direct computation
    draws = gaussian["post"]["posterior"]["beta"].sel(x="a").values.ravel()
    srt = np.sort(draws)
    m = int(math.floor(0.95 * len(srt)))
    widths = srt[m:] - srt[: len(srt) - m]
    j = int(np.argmin(widths))
    assert tab.loc["beta[a]", "hdi_lower"] == pytest.approx(srt[j], abs=2 * np.ptp(srt) / 1e3)
    assert tab.loc["beta[a]", "hdi_upper"] == pytest.approx(srt[j + m], abs=2 * np.ptp(srt) / 1e3)
    # immutability: the table is a copy
    tab.loc["alpha", "mle"] = 99.0
    assert cmp.table.loc["alpha", "mle"] != 99.0


def test_flat_prior_posterior_mean_matches_mle_and_closed_form(gaussian):
    """β: posterior mean = MLE exactly (t centred at OLS); σ: closed-form inverse-gamma mean."""
    tab, X1, y = gaussian["cmp"].table, gaussian["X1"], gaussian["y"]
    n, k = X1.shape
    beta_ols, *_ = np.linalg.lstsq(X1, y, rcond=None)
    for lab, ref in zip(["alpha", "beta[a]", "beta[b]"], beta_ols, strict=True):
        row = tab.loc[lab]
        assert row["mle"] == pytest.approx(ref, abs=1e-8)
        # exact: no bias term, only Monte Carlo error
        assert abs(row["mean"] - row["mle"]) < 4 * row["mcse_mean"]
    rss = float(np.sum((y - X1 @ beta_ols) ** 2))
    a, b = (n - k - 1) / 2, rss / 2
    e_sigma = math.sqrt(b) * math.exp(special.gammaln(a - 0.5) - special.gammaln(a))
    row = tab.loc["sigma"]
    assert abs(row["mean"] - e_sigma) < 4 * row["mcse_mean"]
    # ... and the MLE sqrt(RSS/n) sits below it: a real difference compare reports
    assert row["mle"] == pytest.approx(math.sqrt(rss / n), rel=1e-8)


def test_bernstein_von_mises_sd_ratio(gaussian):
    """Posterior sd / SE near 1: exactly sqrt(n/(n-k-3)) for β (1.015 at n = 200)."""
    tab, X1 = gaussian["cmp"].table, gaussian["X1"]
    n, k = X1.shape
    expected = math.sqrt(n / (n - k - 3))
    for lab in ["alpha", "beta[a]", "beta[b]"]:
        row = tab.loc[lab]
        assert abs(row["sd_ratio"] - expected) < 4 * row["mcse_sd"] / row["std_err"]
        assert abs(row["sd_ratio"] - 1) < 0.1
        assert abs(row["shift_se"]) < 4 * row["mcse_mean"] / row["std_err"]
        assert row["agrees"]


def test_model_level_rows_and_exact_loo(gaussian):
    cmp, fit = gaussian["cmp"], gaussian["fit"]
    s = cmp.model_stats
    assert s["loglik"] == fit.loglik and s["aic"] == fit.aic and s["bic"] == fit.bic
    exact = _exact_loo(gaussian["X1"], gaussian["y"])
    # PSIS-LOO from 1200 well-behaved draws: Monte Carlo error of the sum over 200 points is a
    # few hundredths of a nat (each term's importance-sampling error ~1e-3); 0.3 nat is a
    # loose bound that still catches a wrong likelihood or a missing observation (~1 nat each).
    assert s["elpd_loo"] == pytest.approx(exact, abs=0.3)
    # The Laplace draws, reweighted to the flat-prior posterior (approximate-posterior PSIS),
    # estimate the same ELPD; 1000 draws, so the same loose bound applies.
    assert s["elpd_loo_laplace"] == pytest.approx(exact, abs=0.3)
    assert 0 < s["elpd_loo_se"] < 100 and 0 < s["elpd_loo_laplace_se"] < 100
    # p_loo ≈ number of parameters for a regular model with n >> k
    assert s["p_loo"] == pytest.approx(fit.n_params, abs=1.0)


def test_sigma_difference_reported_not_hidden(gaussian):
    cmp = gaussian["cmp"]
    row = cmp.table.loc["sigma"]
    # closed form: E[σ|y] is above σ̂ = sqrt(RSS/n) by ≈ (k+1)/(2n)·σ plus skew, > 0.1 SE
    assert row["shift_se"] > 0.1
    assert not row["agrees"]  # 0.26 SE measured with this seed; threshold 0.1 + 3 MCSE/SE
    assert any(n.startswith("sigma:") and "above the MLE" in n for n in cmp.notes)
    assert all(cmp.table.loc[lab, "agrees"] for lab in ["alpha", "beta[a]", "beta[b]"])


def test_to_dict_str_html(gaussian):
    cmp = gaussian["cmp"]
    doc = json.loads(json.dumps(cmp.to_dict(), allow_nan=False))
    assert set(doc["parameters"]) == set(gaussian["fit"].labels)
    assert doc["priors"] == {"alpha": "Flat", "beta": "Flat", "sigma": "HalfFlat"}
    assert doc["model_stats"]["elpd_loo"] == pytest.approx(cmp.model_stats["elpd_loo"])
    assert doc["level"] == 0.95
    text = str(cmp)
    assert "beta[a]" in text and "ELPD-LOO (posterior)" in text and "AIC" in text
    page = cmp._repr_html_()
    assert page.startswith("<div>") and "<table" in page and "beta[a]" in page
    assert "Comparison" in repr(cmp)
    with pytest.raises(AttributeError):
        cmp.level = 0.5


@pytest.fixture(scope="module")
def small_normal():
    """n = 8 draws of a normal: σ's likelihood is skewed, Wald and posterior disagree."""
    y = np.array([0.3, -1.2, 0.8, 2.0, 0.1, 1.4, -0.4, 0.9])
    with pm.Model() as model:
        mu = pm.Flat("mu")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu, sigma, observed=y)
    fit = mle_ppl.fit(model)
    post = mle_ppl.sample(model, draws=1000, tune=1000, chains=2, cores=1, random_seed=5,
                          target_accept=0.9)
    return y, fit, post


def test_small_sample_difference_is_reported(small_normal):
    y, fit, post = small_normal
    cmp = mle_ppl.compare(fit, post, random_seed=1, laplace_draws=0)
    n = len(y)
    rss = float(np.sum((y - y.mean()) ** 2))
    a, b = (n - 2) / 2, rss / 2  # k = 1 (the mean)
    e_sigma = math.sqrt(b) * math.exp(special.gammaln(a - 0.5) - special.gammaln(a))
    sd_sigma = math.sqrt(b / (a - 1) - e_sigma**2)
    row = cmp.table.loc["sigma"]
    assert abs(row["mean"] - e_sigma) < 4 * row["mcse_mean"]
    # SE of σ̂ from the observed information: σ̂/sqrt(2n)
    se = math.sqrt(rss / n) / math.sqrt(2 * n)
    assert row["std_err"] == pytest.approx(se, rel=1e-6)
    assert row["shift_se"] == pytest.approx((e_sigma - math.sqrt(rss / n)) / se,
                                            abs=4 * row["mcse_mean"] / se)
    assert row["sd_ratio"] == pytest.approx(sd_sigma / se, abs=4 * row["mcse_sd"] / se)
    assert row["shift_se"] > 1.0 and row["sd_ratio"] > 1.5  # far from BvM at n = 8
    assert not row["agrees"]
    notes = " ".join(cmp.notes)
    assert "sigma:" in notes and "not normal-shaped" in notes
    # μ: t with n − 2 dof centred at ȳ: mean = MLE, sd/SE = sqrt(n/(n − 4)) = 1.41
    mu = cmp.table.loc["mu"]
    assert abs(mu["mean"] - y.mean()) < 4 * mu["mcse_mean"]
    assert mu["sd_ratio"] == pytest.approx(math.sqrt(n / (n - 4)),
                                           abs=4 * mu["mcse_sd"] / mu["std_err"])


def test_sampling_warning_on_bad_diagnostics(small_normal):
    """A posterior cut to 1 chain × 30 draws has too few effective draws: SamplingWarning."""
    _, fit, post = small_normal
    short = xr.DataTree.from_dict({
        "posterior": post["posterior"].to_dataset().isel(chain=[0], draw=slice(0, 30)),
        "log_likelihood": post["log_likelihood"].to_dataset().isel(chain=[0],
                                                                    draw=slice(0, 30)),
    })
    with pytest.warns(mle_ppl.SamplingWarning, match="effective sample size"):
        cmp = mle_ppl.compare(fit, short, laplace_draws=0)
    assert any("effective sample size" in w for w in cmp.warnings)
    assert np.isnan(cmp.table["r_hat"]).all()  # one chain: no R-hat


def test_compare_errors(gaussian, small_normal):
    fit = gaussian["fit"]
    with pytest.raises(mle_ppl.MLEError, match="no variable 'mu'"):
        mle_ppl.compare(small_normal[1], gaussian["post"])
    with pytest.raises(mle_ppl.MLEError, match="DataTree with a 'posterior' group"):
        mle_ppl.compare(fit, {"posterior": 1})
    with pytest.raises(mle_ppl.MLEError, match="level"):
        mle_ppl.compare(fit, gaussian["post"], level=95)
    with pytest.raises(mle_ppl.MLEError, match="MLEFit"):
        mle_ppl.compare("fit", gaussian["post"])
