"""Wald intervals stay inside a parameter's support, and a mixed model's method string claims
Laplace exactness only after checking the log-density is quadratic in the random effects.

References: the Wald interval ``estimate ± z·SE`` recomputed here from the fit's estimates and
standard errors with scipy's normal quantile; the closed-form Poisson MLE ``mean(y)`` with SE
``sqrt(mean(y)/n)``.
"""

import json

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from scipy.stats import norm

import mle_ppl

Z = norm.ppf(0.975)


def test_poisson_rate_wald_lower_end_below_zero_is_nan_with_a_note():
    y = np.array([0, 0, 0, 1, 0])
    with pm.Model() as m:
        lam = pm.HalfFlat("lam")
        pm.Poisson("y", lam, observed=y)
    fit = mle_ppl.fit(m)
    # closed form: 1e-6 relative covers the optimizer's tolerance on the score
    assert fit.estimates["lam"] == pytest.approx(y.mean(), rel=1e-6)
    assert fit.std_errors["lam"] == pytest.approx(np.sqrt(y.mean() / len(y)), rel=1e-5)
    ci = fit.conf_int()
    assert fit.estimates["lam"] - Z * fit.std_errors["lam"] < 0  # the raw Wald end
    assert np.isnan(ci.loc["lam", "lower"])
    assert ci.loc["lam", "upper"] == pytest.approx(
        fit.estimates["lam"] + Z * fit.std_errors["lam"], rel=1e-12)
    (note,) = ci.attrs["notes"]
    assert "lam" in note and "support [0, inf]" in note and 'method="profile"' in note
    tab = fit.table()
    assert np.isnan(tab.loc["lam", "ci_lower"]) and tab.attrs["notes"] == [note]
    doc = json.loads(json.dumps(fit.to_dict()))
    assert doc["parameters"]["lam"]["ci_lower"] is None
    assert doc["parameters"]["lam"]["ci_upper"] == pytest.approx(ci.loc["lam", "upper"])
    assert note in doc["notes"]
    # the sandwich path uses the same rule
    rob = fit.table(cov_type="HC0")
    assert np.isnan(rob.loc["lam", "ci_lower"]) or rob.loc["lam", "ci_lower"] >= 0


def _mixed(G=6, n=60, seed=3, poisson=False, sd=0.3, nonlinear=False):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    u = rng.normal(0, sd, G)
    if poisson:
        y = rng.poisson(np.exp(0.5 + 0.3 * x + u[g]))
    else:
        y = 1 + 0.5 * x + u[g] + rng.normal(0, 1.0, n)
    df = pd.DataFrame({"y": y, "x": x, "g": g})
    with pm.Model(coords={"group": np.arange(G)}) as m:
        a = pm.Flat("a")
        b = pm.Flat("b")
        sd_u = pm.HalfFlat("sd_u")
        u = pm.Normal("u", 0, sd_u, dims="group")
        ug = u[df["g"].to_numpy()]
        eta = a + b * df["x"].to_numpy() + (pm.math.exp(ug) if nonlinear else ug)
        if poisson:
            pm.Poisson("y", pm.math.exp(eta), observed=df["y"].to_numpy())
        else:
            pm.Normal("y", eta, pm.HalfFlat("sigma"), observed=df["y"].to_numpy())
    return m


def test_lmm_variance_component_wald_end_and_exact_laplace_claim():
    fit = mle_ppl.fit(_mixed())
    assert fit.converged and "sd_u" not in fit.random_effects.boundary
    est, se = fit.estimates, fit.std_errors
    raw_lo, raw_hi = est - Z * se, est + Z * se
    assert raw_lo["sd_u"] < 0  # few groups, small SD: the plain Wald end leaves [0, inf)
    ci = fit.conf_int()
    for lab in fit.labels:
        lo, hi = ci.loc[lab]
        if lab == "sd_u":
            assert np.isnan(lo)
        else:
            assert lo == pytest.approx(raw_lo[lab], rel=1e-12)
        assert hi == pytest.approx(raw_hi[lab], rel=1e-12)
    assert list(ci.attrs["outside_support"]) == ["sd_u"]
    doc = fit.to_dict()
    assert doc["parameters"]["sd_u"]["ci_lower"] is None
    assert any(n.startswith("sd_u: the 95% Wald lower end") for n in doc["notes"])
    # Gaussian, mean linear in u: the joint log-density is quadratic in u, so Laplace is exact
    assert fit.random_effects.method == (
        "laplace (exact: the log-density is quadratic in the random effects)")
    assert doc["random_effects"]["method"] == fit.random_effects.method


@pytest.mark.parametrize("kind", ["poisson", "gaussian, mean nonlinear in u"])
def test_method_does_not_claim_exactness_when_not_quadratic(kind):
    poisson = kind == "poisson"
    fit = mle_ppl.fit(_mixed(G=12, n=240, sd=0.8, poisson=poisson, nonlinear=not poisson))
    assert fit.converged and not fit.random_effects.boundary
    assert fit.random_effects.method == "laplace"


def test_boundary_glmm_does_not_claim_exactness():
    # sd_u held near 0: the check moves it to 1, so the random effects' own density
    # cannot hide the observations' non-quadratic terms
    fit = mle_ppl.fit(_mixed(poisson=True))
    assert fit.random_effects.boundary == ("sd_u",)
    assert fit.random_effects.method == "laplace"
