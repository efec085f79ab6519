"""REML for Gaussian linear mixed models: ``fit(..., reml=True)`` and ``mle-ppl fit --reml``.

References: statsmodels ``MixedLM(reml=True)`` (fitted with BFGS, ``gtol=1e-10``: its default
stops short of the 1e-4 tolerance on the variance components); the ANOVA (method-of-moments)
estimators of a balanced one-way design, which REML equals when they are positive; statsmodels
OLS (REML without random effects). Tolerances (issue 14): loglik 1e-6 relative, fixed effects
1e-6, variance components 1e-4.
"""

import json
import warnings

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from test_random_effects import _intercept_data, _intercept_model

import mle_ppl
from mle_ppl import MLEError, ModelError


def _reml(md, **kw):
    # statsmodels warns when its own optimizer misses its tolerances; the values are compared
    # with ours at the stated tolerances (ours are converged to 1e-10 in the Newton decrement)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return md.fit(reml=True, method="bfgs", gtol=1e-10, **kw)


@pytest.mark.slow
def test_random_intercept_matches_statsmodels_reml():
    df = _intercept_data()
    fit = mle_ppl.fit(_intercept_model(df), reml=True)
    ref = _reml(smf.mixedlm("y ~ x", df, groups=df["g"]))
    assert fit.converged and not fit.warnings
    assert fit.criterion == "REML" and "REML" in fit.random_effects.method
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-6)
    np.testing.assert_allclose(fit.estimates[["a", "b"]], ref.fe_params, rtol=1e-6)
    assert fit.estimates["sd_u"] ** 2 == pytest.approx(ref.cov_re.iloc[0, 0], rel=1e-4)
    assert fit.estimates["sigma"] ** 2 == pytest.approx(ref.scale, rel=1e-4)
    # fixed-effect SEs as statsmodels: the inverse Hessian of the REML log-likelihood with β as
    # a parameter, Var β̂ = (X'V⁻¹X)⁻¹ + B Σ_θ B' (B = dβ̂/dθ). lme4's vcov() is (X'V⁻¹X)⁻¹
    # alone: smaller, by 1.4e-3 relative on the slope here. Both checked, the second with a
    # GLS computed in NumPy at statsmodels' variance components.
    np.testing.assert_allclose(fit.std_errors[["a", "b"]], ref.bse_fe, rtol=1e-5)
    X = np.column_stack([np.ones(len(df)), df["x"]])
    g = df["g"].to_numpy()
    V = ref.scale * np.eye(len(df)) + ref.cov_re.iloc[0, 0] * (g[:, None] == g[None, :])
    lme4 = np.sqrt(np.diag(np.linalg.inv(X.T @ np.linalg.solve(V, X))))
    assert lme4[1] / ref.bse_fe.iloc[1] - 1 == pytest.approx(-1.38e-3, abs=5e-5)
    cov = fit.cov.loc[["a", "b"], ["a", "b"]].to_numpy()
    D = fit.cov.loc[["a", "b"], ["sd_u", "sigma"]].to_numpy()
    S = fit.cov.loc[["sd_u", "sigma"], ["sd_u", "sigma"]].to_numpy()
    np.testing.assert_allclose(np.sqrt(np.diag(cov - D @ np.linalg.solve(S, D.T))), lme4,
                               rtol=1e-4)
    # the random effects are statsmodels' BLUPs at the REML estimates
    blup = np.array([ref.random_effects[k].iloc[0] for k in range(30)])
    np.testing.assert_allclose(fit.random_effects.mode, blup, rtol=1e-4, atol=1e-6)
    assert fit.random_effects.names == ("u",) and len(fit.random_effects.labels) == 30
    # AIC/BIC as lme4 counts them for REML: all parameters (2 fixed + 2 variance), n rows
    assert fit.n_params == 4
    assert fit.aic == pytest.approx(2 * 4 - 2 * ref.llf, rel=1e-9)
    assert fit.bic == pytest.approx(4 * np.log(300) - 2 * ref.llf, rel=1e-9)
    doc = fit.to_dict()
    assert doc["criterion"] == "REML" and doc["random_effects"]["method"].startswith("REML")
    assert "REML" in str(fit).splitlines()[0]
    tree = fit.to_datatree()
    assert tree["optimizer_result"].attrs["criterion"] == "REML"


def _balanced(seed, G=12, m=6, sd_u=0.8, sigma=1.0):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), m)
    y = 2.0 + rng.normal(0, sd_u, G)[g] + rng.normal(0, sigma, G * m)
    return y, g


def test_balanced_one_way_reml_equals_anova_estimators():
    # y_ij = mu + u_i + e_ij, G groups of m: the REML estimates are the ANOVA (method-of-moments)
    # estimators when these are positive: sigma² = MSW, sd_u² = (MSB - MSW) / m, and mu the
    # grand mean with SE sqrt(MSB / (G m)). A closed form, independent of statsmodels.
    G, m = 12, 6
    y, g = _balanced(3, G, m)
    means = np.array([y[g == i].mean() for i in range(G)])
    msb = m * np.sum((means - y.mean()) ** 2) / (G - 1)
    msw = np.sum((y - means[g]) ** 2) / (G * (m - 1))
    assert msb > msw  # positive ANOVA estimate of sd_u²: the interior case
    with pm.Model(coords={"group": np.arange(G)}) as model:
        mu = pm.Flat("mu")
        sd_u = pm.HalfFlat("sd_u")
        sigma = pm.HalfFlat("sigma")
        u = pm.Normal("u", 0, sd_u, dims="group")
        pm.Normal("y", mu + u[g], sigma, observed=y)
    fit = mle_ppl.fit(model, reml=True)
    assert fit.converged and not fit.warnings
    assert fit.estimates["sigma"] ** 2 == pytest.approx(msw, rel=1e-6)
    assert fit.estimates["sd_u"] ** 2 == pytest.approx((msb - msw) / m, rel=1e-6)
    assert fit.estimates["mu"] == pytest.approx(y.mean(), rel=1e-10)
    # balanced: β̂ does not depend on θ, so the SE is the classical sqrt(MSB / (G m))
    assert fit.std_errors["mu"] == pytest.approx(np.sqrt(msb / (G * m)), rel=1e-5)


def test_without_random_effects_reml_is_ols_with_the_unbiased_variance():
    rng = np.random.default_rng(11)
    n = 40
    x = rng.normal(size=n)
    y = 1 + 2 * x + rng.normal(size=n)
    with pm.Model() as model:
        a = pm.Flat("a")
        b = pm.Flat("b")
        s = pm.HalfFlat("sigma")
        pm.Normal("y", a + b * x, s, observed=y)
    fit = mle_ppl.fit(model, reml=True)
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert fit.converged and not fit.warnings and fit.random_effects is None
    np.testing.assert_allclose(fit.estimates[["a", "b"]], ols.params, rtol=1e-8)
    assert fit.estimates["sigma"] ** 2 == pytest.approx(ols.scale, rel=1e-8)  # RSS / (n - p)
    np.testing.assert_allclose(fit.std_errors[["a", "b"]], ols.bse, rtol=1e-6)
    # the restricted log-likelihood in closed form: -(n-p)/2 (log 2π s² + 1) - ½ log det X'X
    X = sm.add_constant(x)
    closed = -(n - 2) / 2 * (np.log(2 * np.pi * ols.scale) + 1) - 0.5 * np.linalg.slogdet(
        X.T @ X)[1]
    assert fit.loglik == pytest.approx(closed, rel=1e-10)
    assert any("ordinary least squares" in note for note in fit.notes)


def test_reml_refuses_what_it_cannot_do():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 10, 100)
    x = rng.normal(size=100)
    with pm.Model(coords={"group": np.arange(10)}) as poisson:
        a = pm.Flat("a")
        sd = pm.HalfFlat("sd_u")
        u = pm.Normal("u", 0, sd, dims="group")
        pm.Poisson("y", pm.math.exp(a + u[g]), observed=rng.poisson(2, 100))
    with pytest.raises(ModelError, match="'y' has a Poisson likelihood.*reml=False"):
        mle_ppl.fit(poisson, reml=True)
    y = 1 + x + rng.normal(size=100)
    with pm.Model(coords={"group": np.arange(10)}) as nonlinear:
        a = pm.Flat("a")
        b = pm.Flat("b")
        sd = pm.HalfFlat("sd_u")
        s = pm.HalfFlat("sigma")
        u = pm.Normal("u", 0, sd, dims="group")
        pm.Normal("y", a + pm.math.exp(b * x) + u[g], s, observed=y)
    with pytest.raises(ModelError, match="not linear in the fixed effect b"):
        mle_ppl.fit(nonlinear, reml=True)
    with pm.Model(coords={"group": np.arange(10)}) as no_fixed:
        sd = pm.HalfFlat("sd_u")
        s = pm.HalfFlat("sigma")
        u = pm.Normal("u", 0, sd, dims="group")
        pm.Normal("y", u[g], s, observed=y)
    with pytest.raises(ModelError, match="no fixed effect found"):
        mle_ppl.fit(no_fixed, reml=True)
    with pm.Model(coords={"group": np.arange(10)}) as bounded:
        a = pm.HalfFlat("a")
        sd = pm.HalfFlat("sd_u")
        s = pm.HalfFlat("sigma")
        u = pm.Normal("u", 0, sd, dims="group")
        pm.Normal("y", a + u[g], s, observed=y)
    with pytest.raises(ModelError, match="a enter.*mean but is bounded"):
        mle_ppl.fit(bounded, reml=True)


@pytest.mark.slow
def test_lrt_between_reml_fits_needs_the_same_fixed_effects():
    df = _intercept_data(seed=8)
    big = mle_ppl.fit(_intercept_model(df), reml=True)
    y, x = df["y"].to_numpy(), df["x"].to_numpy()
    with pm.Model() as no_re:  # same fixed effects, no random intercept
        a = pm.Flat("a")
        b = pm.Flat("b")
        s = pm.HalfFlat("sigma")
        pm.Normal("y", a + b * x, s, observed=y)
    small = mle_ppl.fit(no_re, reml=True)
    res = mle_ppl.lrt(small, big)  # a variance component tested under REML: allowed
    assert res.df == 1 and res.statistic > 0
    with pm.Model() as fewer:  # different fixed effects: refused
        a = pm.Flat("a")
        s = pm.HalfFlat("sigma")
        pm.Normal("y", a + 0 * x, s, observed=y)
    other = mle_ppl.fit(fewer, reml=True)
    with pytest.raises(MLEError, match="REML fits with different fixed effects"):
        mle_ppl.lrt(other, big)
    with pytest.raises(MLEError, match="REML fits with different fixed effects"):
        mle_ppl.ic_table([other, big])
    ml = mle_ppl.fit(no_re)
    with pytest.raises(MLEError, match="is a REML fit and .* an ML fit"):
        mle_ppl.lrt(ml, big)


@pytest.mark.slow
def test_cli_fit_reml(tmp_path, capsys):
    from mle_ppl._src.cli.main import main

    df = _intercept_data(seed=2)
    df.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "m.toml").write_text(
        '[model]\nformula = "y ~ x + (1 | g)"\nfamily = "gaussian"\n', encoding="utf-8")
    code = main(["fit", str(tmp_path / "m.toml"), "--data", str(tmp_path / "d.csv"), "--reml",
                 "--json"])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    ref = _reml(smf.mixedlm("y ~ x", df, groups=df["g"]))
    assert doc["criterion"] == "REML"
    assert doc["loglik"] == pytest.approx(ref.llf, rel=1e-6)
    code = main(["fit", str(tmp_path / "m.toml"), "--data", str(tmp_path / "d.csv"), "--reml"])
    text = capsys.readouterr().out
    assert code == 0 and "REML fit (restricted maximum likelihood)" in text
    assert "Fixed effects (GLS at the REML variance components)" in text
    # bad input: a Poisson model with --reml is exit 2, one line on stderr, nothing on stdout
    (tmp_path / "p.toml").write_text(
        '[model]\nformula = "y ~ x + (1 | g)"\nfamily = "poisson"\n', encoding="utf-8")
    df.assign(y=np.random.default_rng(0).poisson(2, len(df))).to_csv(tmp_path / "p.csv",
                                                                      index=False)
    code = main(["fit", str(tmp_path / "p.toml"), "--data", str(tmp_path / "p.csv"), "--reml"])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == "" and "Poisson likelihood" in cap.err
    assert len(cap.err.strip().splitlines()) == 1


def test_reml_with_data_in_chunks_is_refused(tmp_path):
    df = pd.DataFrame({"y": np.arange(10.0), "x": np.arange(10.0)})
    df.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "m.toml").write_text(
        '[model]\nformula = "y ~ x"\nfamily = "gaussian"\n', encoding="utf-8")
    with pytest.raises(MLEError, match="reml=True needs the data in memory"):
        mle_ppl.fit(str(tmp_path / "m.toml"), data=str(tmp_path / "d.parquet"), chunk_rows=5,
                    reml=True)


def _one_way_model(y, g, G):
    with pm.Model(coords={"group": np.arange(G)}) as model:
        mu = pm.Flat("mu")
        sd_u = pm.HalfFlat("sd_u")
        sigma = pm.HalfFlat("sigma")
        u = pm.Normal("u", 0, sd_u, dims="group")
        pm.Normal("y", mu + u[g], sigma, observed=y)
    return model


def test_gradient_away_from_the_gls_point_is_exact():
    # F(β, θ) away from β = β̂(θ) (profiles and the Hessian walk there): its exact gradient
    # against central differences
    from mle_ppl._src.engine.fit import objective_for

    y, g = _balanced(5)
    obj = objective_for(_one_way_model(y, g, 12), likelihood_only=False, mode="auto", reml=True)
    x = obj.x0() + np.array([0.3, -0.2, 0.1])
    _, grad = obj.value_and_grad(x)
    eps = 1e-5
    fd = [(obj.value(x + eps * e) - obj.value(x - eps * e)) / (2 * eps) for e in np.eye(3)]
    # central differences: truncation ~eps^2 |f'''|, rounding ~1e-16 |f| / eps ~ 1e-9
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_profile_interval_of_a_variance_component_is_the_reml_profile():
    # balanced one-way design: the REML log-likelihood in closed form,
    # -½ [G(m-1) log σ² + (G-1) log λ + SSW/σ² + SSB/λ], λ = σ² + m sd_u²; its profile in sd_u
    # (maximised over σ² numerically) drops by χ²₁(0.95)/2 at the interval's ends
    from scipy import optimize, stats

    G, m = 12, 6
    y, g = _balanced(3, G, m)
    means = np.array([y[g == i].mean() for i in range(G)])
    ssw = np.sum((y - means[g]) ** 2)
    ssb = m * np.sum((means - y.mean()) ** 2)

    def loglik(s2, sd):
        lam = s2 + m * sd**2
        return -0.5 * (G * (m - 1) * np.log(s2) + (G - 1) * np.log(lam) + ssw / s2 + ssb / lam)

    def prof(sd):
        res = optimize.minimize_scalar(lambda t: -loglik(np.exp(t), sd), bounds=(-10, 10),
                                       method="bounded", options={"xatol": 1e-12})
        return -res.fun

    msw, msb = ssw / (G * (m - 1)), ssb / (G - 1)
    sd_hat = np.sqrt((msb - msw) / m)
    drop = stats.chi2.ppf(0.95, 1) / 2
    top = prof(sd_hat)
    lo = optimize.brentq(lambda s: top - prof(s) - drop, 1e-6, sd_hat, xtol=1e-12)
    hi = optimize.brentq(lambda s: top - prof(s) - drop, sd_hat, 20 * sd_hat, xtol=1e-12)
    fit = mle_ppl.fit(_one_way_model(y, g, G), reml=True)
    pr = fit.profile("sd_u")
    # the profile's ends are found by root finding on the engine's profile (1e-4 relative)
    assert pr.lower == pytest.approx(lo, rel=1e-4)
    assert pr.upper == pytest.approx(hi, rel=1e-4)


@pytest.mark.slow
def test_correlated_intercept_and_slope_match_statsmodels_reml():
    import pytensor.tensor as pt

    rng = np.random.default_rng(2)
    G, n = 12, 180
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    U = rng.multivariate_normal([0, 0], [[0.5, 0.15], [0.15, 0.3]], G)
    y = 1 + 0.5 * x + U[g, 0] + U[g, 1] * x + rng.normal(0, 1.0, n)
    df = pd.DataFrame({"y": y, "x": x, "g": g})
    with pm.Model(coords={"group": np.arange(G), "effect": ["Intercept", "x"]}) as model:
        a = pm.Flat("a")
        b = pm.Flat("b")
        sds = pm.HalfFlat("sd_u", dims="effect")
        s = pm.HalfFlat("sigma")
        rho = pm.Uniform("rho", -1, 1)
        off = rho * sds[0] * sds[1]
        cov = pt.stack([pt.stack([sds[0] ** 2, off]), pt.stack([off, sds[1] ** 2])])
        u = pm.MvNormal("u", mu=pt.zeros(2), cov=cov, dims=("group", "effect"))
        pm.Normal("y", a + b * x + u[g, 0] + u[g, 1] * x, s, observed=y)
    fit = mle_ppl.fit(model, reml=True)
    ref = _reml(smf.mixedlm("y ~ x", df, groups=df["g"], re_formula="~x"))
    assert fit.converged and not fit.warnings
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-6)
    np.testing.assert_allclose(fit.estimates[["a", "b"]], ref.fe_params, rtol=1e-6)
    sd = fit.estimates[["sd_u[Intercept]", "sd_u[x]"]].to_numpy()
    np.testing.assert_allclose(sd**2, np.diag(ref.cov_re), rtol=1e-4)
    assert fit.estimates["rho"] * sd[0] * sd[1] == pytest.approx(ref.cov_re.iloc[0, 1], rel=1e-4)
    assert fit.estimates["sigma"] ** 2 == pytest.approx(ref.scale, rel=1e-4)
    np.testing.assert_allclose(fit.std_errors[["a", "b"]], ref.bse_fe, rtol=1e-4)


def _check_vc(fit, ref, fixed, sds):
    assert fit.converged and not fit.warnings
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-6)
    np.testing.assert_allclose(fit.estimates[fixed], ref.fe_params, rtol=1e-6)
    sm_var = [ref.cov_re.iloc[0, 0]] if ref.cov_re.shape[0] else []
    np.testing.assert_allclose(fit.estimates[sds].to_numpy() ** 2,
                               np.array(sm_var + list(ref.vcomp)), rtol=1e-4)
    assert fit.estimates["sigma"] ** 2 == pytest.approx(ref.scale, rel=1e-4)


def _reml_vc(df, groups, vc, re_formula):
    md = smf.mixedlm("y ~ x", df, groups=df[groups], re_formula=re_formula, vc_formula=vc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # statsmodels' L-BFGS stage
        start = md.fit(reml=True, method="lbfgs")
    return _reml(md, start_params=start.params_object)


@pytest.mark.slow
def test_nested_groupings_match_statsmodels_reml():
    rng = np.random.default_rng(5)
    G1, G2, n = 8, 3, 160
    g1 = np.repeat(np.arange(G1), n // G1)
    g2 = rng.integers(0, G2, n)
    g12 = g1 * G2 + g2
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, 0.8, G1)[g1] + rng.normal(0, 0.5, G1 * G2)[g12]
         + rng.normal(0, 1, n))
    df = pd.DataFrame({"y": y, "x": x, "g1": g1, "g2": g2})
    with pm.Model(coords={"g1": np.arange(G1), "g12": np.arange(G1 * G2)}) as model:
        a = pm.Flat("a")
        b = pm.Flat("b")
        s1 = pm.HalfFlat("sd_g1")
        s2 = pm.HalfFlat("sd_g12")
        s = pm.HalfFlat("sigma")
        u1 = pm.Normal("u1", 0, s1, dims="g1")
        u2 = pm.Normal("u2", 0, s2, dims="g12")
        pm.Normal("y", a + b * x + u1[g1] + u2[g12], s, observed=y)
    fit = mle_ppl.fit(model, reml=True)
    _check_vc(fit, _reml_vc(df, "g1", {"g2": "0 + C(g2)"}, "1"), ["a", "b"], ["sd_g1", "sd_g12"])


@pytest.mark.slow
def test_crossed_groupings_match_statsmodels_reml():
    from test_random_effects_grouping import _crossed

    df, model = _crossed()
    fit = mle_ppl.fit(model, reml=True)
    ref = _reml_vc(df, "one", {"a": "0 + C(a)", "b": "0 + C(b)"}, "0")
    _check_vc(fit, ref, ["c", "d"], ["sd_a", "sd_b"])


@pytest.mark.slow
def test_bundled_linear_mixed_with_reml_matches_statsmodels():
    # the bundled sleep-study-like model file (reaction ~ days + (1 + days | subject)) with REML
    fit = mle_ppl.fit("linear_mixed", reml=True)
    df = fit.data
    md = smf.mixedlm("reaction ~ days", df, groups=df["subject"], re_formula="~days")
    ref = _reml(md)
    assert fit.converged and not fit.warnings and fit.criterion == "REML"
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-6)
    np.testing.assert_allclose(fit.estimates[["beta[Intercept]", "beta[days]"]],
                               ref.fe_params, rtol=1e-6)
    sd = fit.estimates[["sd_subject[Intercept]", "sd_subject[days]"]].to_numpy()
    np.testing.assert_allclose(sd**2, np.diag(ref.cov_re), rtol=1e-4)
    assert fit.estimates["sigma"] ** 2 == pytest.approx(ref.scale, rel=1e-4)


def test_dense_fixed_effect_rows_are_assembled_exactly():
    # the fixed effect mu is coupled to every group: it gets a colour of its own and the random
    # intercepts share one; H assembled from those 2 products, and the scattered products of the
    # log-det gradient, against H from one product per unit vector
    from mle_ppl._src.engine.fit import objective_for

    y, g = _balanced(7)
    obj = objective_for(_one_way_model(y, g, 12), likelihood_only=False, mode="auto", reml=True)
    inner = obj.inner
    st = inner.structure
    assert st.n_colors == 2 and st.dense.sum() == 1
    z = np.concatenate([inner.x0() + 0.2, np.random.default_rng(0).normal(size=13)])
    H = np.column_stack([-inner._hv_u(z, e) for e in np.eye(13)])
    blocks = inner._hessian_u(z, st)
    dense = np.zeros((13, 13))
    for (idx, _, _), B in zip(st.buckets, blocks.blocks, strict=True):
        for b in range(len(idx)):
            dense[np.ix_(idx[b], idx[b])] = B[b]
    np.testing.assert_allclose(dense, H, rtol=1e-12, atol=1e-12)
    S = np.random.default_rng(1).normal(size=(13, 13))
    S = S + S.T
    M = st.scatter([np.stack([S[np.ix_(i, i)] for i in idx]) for idx, _, _ in st.buckets])
    HV = np.array([H @ v for v in st.V])
    assert np.sum(M * HV) == pytest.approx(np.sum(S * H), rel=1e-12)
