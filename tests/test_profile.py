"""Profile-likelihood intervals against closed forms, R's confint.glm and independent SciPy code."""

import io

import matplotlib.pyplot as plt
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
import statsmodels.api as sm
from scipy import optimize, stats

import mle_ppl
from mle_ppl._src.engine import likelihood as L

Q95 = stats.chi2.ppf(0.95, 1)


@pytest.fixture(scope="module")
def normal_fit():
    y = np.random.default_rng(0).normal(1.0, 2.0, size=15)
    with pm.Model() as m:
        mu = pm.Flat("mu")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu, sigma, observed=y)
    return mle_ppl.fit(m), y


# --- Dobson (1990) Poisson example from R's ?glm: counts ~ outcome + treatment
DOBSON_COUNTS = np.array([18, 17, 15, 20, 10, 20, 25, 13, 12])
# R: confint(glm.D93) (MASS profile method), as printed in R's documentation. MASS interpolates a
# spline through a grid of profile points, so its ends carry errors of ~1e-5: compare at 3e-5.
R_CONFINT = np.array([[2.6958215, 3.36655581], [-0.8577018, -0.06255840],
                      [-0.6753696, 0.08244089], [-0.3932548, 0.39325483],
                      [-0.3932548, 0.39325483]])


def _dobson_X():
    outcome = np.tile([0, 1, 2], 3)
    treatment = np.repeat([0, 1, 2], 3)
    return np.column_stack([np.ones(9), outcome == 1, outcome == 2, treatment == 1,
                            treatment == 2]).astype(float)


@pytest.fixture(scope="module")
def dobson_fit():
    X = _dobson_X()
    names = ["(Intercept)", "outcome2", "outcome3", "treatment2", "treatment3"]
    with pm.Model(coords={"coef": names}) as m:
        b = pm.Flat("beta", dims="coef")
        pm.Poisson("y", mu=pt.exp(pm.Data("X", X) @ b), observed=DOBSON_COUNTS)
    return mle_ppl.fit(m)


def test_normal_sigma_matches_closed_form(normal_fit):
    fit, y = normal_fit
    n, s2 = len(y), np.var(y)

    # profile deviance of sigma (mu profiled out: mu = ybar) is n s2/σ² - n - n log(s2/σ²)
    def dev(s):
        return n * s2 / s**2 - n - n * np.log(s2 / s**2) - Q95

    lo = optimize.brentq(dev, 1e-3, np.sqrt(s2), xtol=1e-14)
    hi = optimize.brentq(dev, np.sqrt(s2), 100, xtol=1e-14)
    prof = fit.profile("sigma")
    # our ends come from Brent on the signed root deviance with xtol 1e-10 on log σ and inner
    # Newton fits to 1e-12: relative 1e-8 is comfortably above that noise
    np.testing.assert_allclose(prof.interval, (lo, hi), rtol=1e-8)
    assert not prof.open_lower and not prof.open_upper
    ci = fit.conf_int(method="profile")
    np.testing.assert_allclose(ci.loc["sigma"], (lo, hi), rtol=1e-8)
    # mu: profiling σ out gives n log(1 + (mu - ybar)²/s2) = q: closed form
    half = np.sqrt(s2 * (np.exp(Q95 / n) - 1))
    np.testing.assert_allclose(ci.loc["mu"], (y.mean() - half, y.mean() + half), rtol=1e-8)
    # the curve: z² is the deviance at each profiled point
    fr = prof.to_frame()
    np.testing.assert_allclose(fr["z"] ** 2, 2 * (fit.loglik - fr["loglik"]), atol=1e-9)
    # 90%: a different level gives a different (narrower) interval
    lo90 = optimize.brentq(lambda s: dev(s) + Q95 - stats.chi2.ppf(0.9, 1), 1e-3, np.sqrt(s2))
    np.testing.assert_allclose(fit.profile("sigma", level=0.9).lower, lo90, rtol=1e-8)


def test_dobson_poisson_matches_r_confint_and_independent_profile(dobson_fit):
    ci = dobson_fit.conf_int(method="profile")
    np.testing.assert_allclose(ci.to_numpy(), R_CONFINT, atol=3e-5)
    # independent profile: statsmodels GLM with the profiled coefficient as an offset, and
    # scipy's brentq on the deviance; agreement to 1e-7 (both solve to ~1e-10)
    X = _dobson_X()
    full = sm.GLM(DOBSON_COUNTS, X, family=sm.families.Poisson()).fit(tol=1e-13)
    for j in (0, 1, 2):
        others = [k for k in range(5) if k != j]

        def dev(b, j=j, others=others):
            r = sm.GLM(DOBSON_COUNTS, X[:, others], family=sm.families.Poisson(),
                       offset=X[:, j] * b).fit(tol=1e-13)
            return 2 * (full.llf - r.llf) - Q95

        b = full.params[j]
        lo = optimize.brentq(dev, b - 2, b, xtol=1e-12)
        hi = optimize.brentq(dev, b, b + 2, xtol=1e-12)
        np.testing.assert_allclose(ci.iloc[j], (lo, hi), atol=1e-7)


def test_expression_profile_matches_scipy(normal_fit):
    fit, y = normal_fit
    n = len(y)

    def ll(mu, s):
        return stats.norm.logpdf(y, mu, s).sum()

    def prof_ll(c):  # mu = c σ: maximise over log σ
        r = optimize.minimize_scalar(lambda ls: -ll(c * np.exp(ls), np.exp(ls)),
                                     bracket=(0.0, 1.0), tol=1e-12)
        return -r.fun

    c_hat = y.mean() / np.std(y)
    lo = optimize.brentq(lambda c: 2 * (fit.loglik - prof_ll(c)) - Q95, c_hat - 2, c_hat)
    hi = optimize.brentq(lambda c: 2 * (fit.loglik - prof_ll(c)) - Q95, c_hat, c_hat + 2)
    before = L.COMPILE_COUNT
    prof = fit.profile("mu / sigma")
    assert L.COMPILE_COUNT - before <= 1  # one compiled (g, grad g, hess g) per expression
    np.testing.assert_allclose(prof.estimate, c_hat, rtol=1e-10)
    # golden-section inner maximisation in the reference is accurate to ~1e-8 in log σ, which
    # moves the crossing by ~1e-8 relative
    np.testing.assert_allclose(prof.interval, (lo, hi), rtol=1e-6)
    assert n == 15
    # an expression that is a monotone function of one parameter reproduces its interval
    before = L.COMPILE_COUNT
    lg = fit.profile("log(sigma)")
    np.testing.assert_allclose(lg.interval, np.log(fit.profile("sigma").interval), rtol=1e-7)
    assert L.COMPILE_COUNT - before <= 1


def test_profiles_do_not_recompile(dobson_fit):
    dobson_fit.profile("beta[outcome2]")
    before = L.COMPILE_COUNT
    dobson_fit.conf_int(method="profile")
    dobson_fit.profile("beta[(Intercept)]")
    assert L.COMPILE_COUNT == before


def test_open_ended_profile_is_flagged():
    # y = a (1 - exp(-b x)) with noisy data: as b -> inf the mean tends to a constant and as
    # b -> 0 to a line through the origin; when both limits lose less than chi2/2 of
    # log-likelihood, neither end of b's interval is reached.
    x = np.linspace(1, 10, 10)
    y = 5 * (1 - np.exp(-0.5 * x)) + np.random.default_rng(3).normal(0, 1.0, size=10)
    with pm.Model() as m:
        a = pm.Flat("a")
        b = pm.HalfFlat("b")
        s = pm.HalfFlat("s")
        pm.Normal("y", a * (1 - pt.exp(-b * pm.Data("x", x))), s, observed=y)
    fit = mle_ppl.fit(m, start={"a": 5.0, "b": 0.5, "s": 1.0})
    assert fit.converged
    n = len(y)
    ll_const = -n / 2 * (np.log(2 * np.pi * np.var(y)) + 1)  # b -> inf: constant mean
    slope = (x @ y) / (x @ x)
    ll_line = -n / 2 * (np.log(2 * np.pi * np.mean((y - slope * x) ** 2)) + 1)  # b -> 0
    assert fit.loglik - ll_const < Q95 / 2 and fit.loglik - ll_line < Q95 / 2
    prof = fit.profile("b")
    assert prof.open_upper and prof.upper == np.inf
    assert prof.open_lower and prof.lower == 0.0
    assert "boundary" in " ".join(prof.notes)
    assert "open" in str(prof)
    ci = fit.conf_int(method="profile")
    assert ci.attrs["open"]["b"] == (True, True)
    # the b -> 0 limit is a line a·b·x with a -> inf: a's upper end is open too, its lower end
    # (a below the plateau of the data) is reached
    assert ci.attrs["open"]["a"] == (False, True)
    assert np.isfinite(ci.loc["a", "lower"]) and ci.loc["a", "upper"] == np.inf


def test_plot_and_errors(normal_fit):
    fit, _ = normal_fit
    prof = fit.profile("sigma")
    fig = prof.plot()
    assert isinstance(fig, plt.Figure)  # issue 12: was Axes, .savefig failed
    fig.savefig(io.BytesIO(), format="png")
    ax = fig.axes[0]
    assert len(ax.lines) >= 4
    # every line is explained in the legend: profile, Wald, cut-offs, interval, MLE
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["profile (signed root deviance)", "Wald (estimate − value)/SE"]
    assert any("cut-offs" in t for t in labels) and "MLE" in labels
    assert "95% profile interval" in labels
    assert ax.get_xlabel() == "sigma"
    # the x label is inside the saved figure (constrained layout; it was clipped)
    fig.canvas.draw()
    box = ax.xaxis.label.get_window_extent()
    assert box.y0 >= 0 and box.x0 >= 0
    fig2 = prof.plot(kind="loglik")
    ax2 = fig2.axes[0]
    assert ax2.get_ylabel() == "log-likelihood"
    assert any("cut-off" in t.get_text() for t in ax2.get_legend().get_texts())
    _, given = plt.subplots()
    assert prof.plot(given) is given.figure
    plt.close("all")
    with pytest.raises(mle_ppl.MLEError, match="Did you mean 'sigma'"):
        fit.profile("sigam")
    with pytest.raises(mle_ppl.MLEError, match="not allowed"):
        fit.profile("__import__(1)")
    with pytest.raises(mle_ppl.MLEError, match="level"):
        fit.profile("mu", level=95)


def test_to_dict_exposes_profile_intervals(dobson_fit):
    d = dobson_fit.to_dict(ci="profile")
    assert d["ci_method"] == "profile" and d["cov_type"] == "nonrobust"
    got = [[p["ci_lower"], p["ci_upper"]] for p in d["parameters"].values()]
    np.testing.assert_allclose(got, R_CONFINT, atol=3e-5)  # same reference as above
    assert all(p["ci_open"] == [False, False] for p in d["parameters"].values())
    assert dobson_fit.to_dict()["ci_method"] == "wald"


def test_cli_fit_ci_profile_and_robust_cov(capsys):
    import json

    from mle_ppl._src.cli import main

    status = main(["fit", "poisson_exposure", "--ci", "profile", "--cov", "cluster",
                   "--cluster", "urban", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert status == 0 and doc["ci_method"] == "profile" and doc["cov_type"] == "cluster"
    # the CLI is plumbing over the Python API, whose numbers are checked against R/statsmodels
    fit = mle_ppl.fit("poisson_exposure")
    ci = fit.conf_int(method="profile")
    se = fit.table(cov_type="cluster", groups="urban")["std_err"]
    for lab, p in doc["parameters"].items():
        np.testing.assert_allclose([p["ci_lower"], p["ci_upper"]], ci.loc[lab], rtol=1e-12)
        np.testing.assert_allclose(p["std_err"], se[lab], rtol=1e-12)
    assert main(["fit", "poisson_exposure", "--cov", "cluster"]) == 2
    assert "--cluster" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_sigma_profile_does_not_depend_on_units(normal_fit, scale):
    """y x 1e-30 puts log sigma near -69: a profile of sigma must scale with the data, not stop
    at a fixed bound on the unconstrained scale (issue 12, boundary detection free of units).
    Reference: the same closed-form profile interval as above, times the scale (rtol 1e-7)."""
    fit, y = normal_fit
    with pm.Model() as m:
        mu = pm.Flat("mu")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu, sigma, observed=y * scale)
    scaled = mle_ppl.fit(m)
    assert scaled.trustworthy
    prof = scaled.profile("sigma")
    assert not prof.open_lower and not prof.open_upper
    np.testing.assert_allclose(np.array(prof.interval) / scale, fit.profile("sigma").interval,
                               rtol=1e-7)
