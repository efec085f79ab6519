"""Profile intervals at a boundary (singular) fit (issue 14 item 6): a variance component at 0 is
held at 0 in the profile's inner fits, as lme4 profiles a singular fit, so the other parameters
get finite intervals, and the variance component's interval is one-sided.

At σ_u = 0 the marginal likelihood is the likelihood of the model without the random effect, so
the references are that model's profiles, computed here independently: the closed-form profile of
a least-squares coefficient (σ profiled out), and a statsmodels GLM Poisson profile (the other
coefficient refitted by IRLS with the profiled one as an offset) root-found by SciPy's brentq.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, stats

import mle_ppl

sys.path.insert(0, str(Path(__file__).parent))
from test_glmm_quadrature import _laplace_ref, _model  # noqa: E402
from test_random_effects import _intercept_data, _intercept_model  # noqa: E402

Z95 = stats.norm.ppf(0.975)


@pytest.mark.slow  # ~60 s: three Laplace-objective profiles
def test_lmm_boundary_fit_fixed_effects_have_the_ols_profile_intervals():
    rng = np.random.default_rng(4)
    df = _intercept_data(seed=4, sd_u=0.0)
    df["y"] = 1 + 0.5 * df["x"] + rng.normal(0, 1.0, len(df))
    fit = mle_ppl.fit(_intercept_model(df))
    assert fit.random_effects.boundary == ("sd_u",)
    # OLS with σ profiled out: 2(l̂ - l_p(β_j)) = n log(RSS(β_j) / RSS), and
    # RSS(β_j) = RSS + (β_j - β̂_j)² / [(X'X)^-1]_jj, so the ends are closed-form
    X = sm.add_constant(df["x"]).to_numpy()
    y = df["y"].to_numpy()
    n = len(y)
    ols = sm.OLS(y, X).fit()
    half = np.sqrt(ols.ssr * np.expm1(Z95**2 / n) * np.diag(np.linalg.inv(X.T @ X)))
    # (sd_u's one-sided interval at this fit: test_random_effects' singular-fit test)
    ci = pd.DataFrame({lab: fit.profile(lab).interval for lab in ("a", "b", "sigma")},
                      index=["lower", "upper"]).T
    # 1e-6: the ends are root-found to ~1e-10 in t and the fits converge to ~1e-8 of an SE
    np.testing.assert_allclose(ci.loc[["a", "b"], "lower"], ols.params - half, atol=1e-6)
    np.testing.assert_allclose(ci.loc[["a", "b"], "upper"], ols.params + half, atol=1e-6)
    # sigma: the OLS profile of σ is closed-form too, n log(s²/σ̂²) + n(σ̂²/s² - 1) = z²
    s2 = ols.ssr / n
    r = [optimize.brentq(lambda v: n * (np.log(v / s2) + s2 / v - 1) - Z95**2, *br)
         for br in ((s2 / 10, s2), (s2, 10 * s2))]
    np.testing.assert_allclose(ci.loc["sigma"], np.sqrt(r), atol=1e-6)


def _poisson_boundary_data():
    # few groups and σ_u = 0 in the simulation: the marginal likelihood peaks at σ_u = 0
    rng = np.random.default_rng(1)
    G, m = 6, 10
    g = np.repeat(np.arange(G), m)
    x = rng.normal(size=G * m)
    y = rng.poisson(np.exp(0.3 + 0.5 * x))
    return y, x, g, G


def _glm_profile_ends(y, x, j):
    """Profile interval of coefficient j of the Poisson GLM y ~ 1 + x (statsmodels + brentq)."""
    X = sm.add_constant(x)
    full = sm.GLM(y, X, family=sm.families.Poisson()).fit(tol=1e-13)
    other = X[:, 1 - j]

    def r2(v):  # 2 (l̂ - l_p(v)) - z²: the other coefficient refitted with v X_j as an offset
        sub = sm.GLM(y, other, family=sm.families.Poisson(), offset=v * X[:, j]).fit(tol=1e-13)
        return 2 * (full.llf - sub.llf) - Z95**2

    b, se = full.params[j], full.bse[j]
    return (optimize.brentq(r2, b - 5 * se, b, xtol=1e-12),
            optimize.brentq(r2, b, b + 5 * se, xtol=1e-12))


def test_poisson_glmm_boundary_fit_fixed_effects_have_the_glm_profile_intervals():
    y, x, g, G = _poisson_boundary_data()
    fit = mle_ppl.fit(_model("poisson", y, x, g, G))
    assert fit.converged and fit.random_effects.boundary == ("sd_u",)
    assert fit.x[2] < -30  # log σ_u held far down: the coordinate that used to break the profile
    for j, lab in enumerate(("a", "b")):
        prof = fit.profile(lab)
        assert not (prof.open_lower or prof.open_upper) and not prof.notes
        # 1e-6: both sides root-find to 1e-10 and fit to ~1e-12 in log-likelihood; the Laplace
        # marginal at σ_u = e^-50 equals the GLM likelihood to rounding
        np.testing.assert_allclose(prof.interval, _glm_profile_ends(y, x, j), atol=1e-6)
    # σ_u walks up from its boundary: one-sided [0, upper]. Reference: the NumPy Laplace
    # marginal of test_glmm_quadrature (per-group Newton, analytic derivatives), (a, b)
    # re-maximised by SciPy at each σ_u, the end root-found by brentq
    ll_hat = sm.GLM(y, sm.add_constant(x), family=sm.families.Poisson()).fit(tol=1e-13).llf

    def r2(sd):
        res = optimize.minimize(lambda ab: -_laplace_ref("poisson", [*ab, sd], y, x, g, G),
                                fit.estimates[["a", "b"]].to_numpy(), method="BFGS",
                                options={"gtol": 1e-9})
        return 2 * (ll_hat + res.fun) - Z95**2

    upper = optimize.brentq(r2, 0.05, 2.0, xtol=1e-10)
    prof = fit.profile("sd_u")
    assert prof.lower == 0.0 and prof.open_lower and not prof.open_upper
    # 1e-6: BFGS on two coordinates reaches the inner maximum to ~1e-12 in log-likelihood, which
    # moves the end by ~1e-11 (the slope of r² there is O(10))
    assert prof.upper == pytest.approx(upper, abs=1e-6)
    # expressions are compiled over the in-memory likelihood only: refused by name, not a crash
    with pytest.raises(mle_ppl.MLEError, match="not available for LaplaceMarginal.*'a'"):
        fit.profile("exp(a)")


def test_failed_inner_fit_gives_nan_with_a_warning_not_an_open_end(monkeypatch):
    # The inner fits of this profile now succeed even with nothing held (a variance component
    # settles at 0 in them), so a failure is forced: every inner fit reports failure, and the
    # report must be honest (NaN ends, a note, a ConvergenceWarning), never an open ±inf end.
    from mle_ppl._src.inference import profile as prof_mod

    y, x, g, G = _poisson_boundary_data()
    fit = mle_ppl.fit(_model("poisson", y, x, g, G))

    def failing(self, t, guess):
        z = np.array(guess, dtype=float)
        z[self.i] = t
        return z, -np.inf, False

    monkeypatch.setattr(prof_mod._CoordinateSolver, "solve", failing)
    with pytest.warns(mle_ppl.ConvergenceWarning, match="inner fit.*NaN"):
        prof = fit.profile("a")
    assert np.isnan(prof.lower) and np.isnan(prof.upper)
    assert not (prof.open_lower or prof.open_upper)
    assert "NaN (not computed)" in " ".join(prof.notes)


@pytest.mark.slow  # ~20 s: a mixed-model fit from a model file and one profile
def test_dyestuff2_boundary_fit_intercept_profile_is_the_mean_profile(tmp_path):
    # lme4's Dyestuff2 from a model file's formula: a singular fit (lme4 agrees, see
    # test_lme4_reference), after which the model is y ~ 1, whose intercept profile (σ profiled
    # out) is closed-form: ȳ ± sqrt(RSS (exp(z²/n) - 1) / n)
    from test_lme4_reference import _formula_model, _read

    df = _read("Dyestuff2")
    fit = mle_ppl.fit(_formula_model("Yield ~ 1 + (1 | Batch)", df, tmp_path))
    assert fit.random_effects.boundary == ("sd_Batch",)
    y = df.Yield.to_numpy()
    n = len(y)
    half = np.sqrt(((y - y.mean()) ** 2).sum() * np.expm1(Z95**2 / n) / n)
    prof = fit.profile("beta[Intercept]")
    # 1e-6: root-finding to ~1e-10 in the coordinate; the inner fit converges to ~1e-8 of an SE
    np.testing.assert_allclose(prof.interval, (y.mean() - half, y.mean() + half), atol=1e-6)
