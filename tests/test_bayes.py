"""mle_ppl.sample: NUTS on the same model, priors by name, improper posteriors refused.

References: conjugate normal-normal posterior (closed form) for prior shrinkage; the MLE of a
bundled model for the flat-prior large-n check; Monte Carlo tolerances from arviz-stats' MCSE.
"""

import json
import math

import arviz_stats
import numpy as np
import pymc as pm
import pytest
import xarray as xr
from _models import gaussian_linear, logistic

import mle_ppl
from mle_ppl._src.bayes.sample import parse_prior, with_priors


def _separated():
    x = np.r_[np.linspace(-2, -0.1, 10), np.linspace(0.1, 2, 10)]
    X = np.column_stack([np.ones(20), x])
    y = np.r_[np.zeros(10), np.ones(10)]
    return X, y


def test_separation_refused_with_explanation():
    X, y = _separated()
    with pytest.raises(mle_ppl.ModelError, match=r"improper.*priors=\{'beta': 'Normal\(0, 2.5\)'"):
        mle_ppl.sample(logistic(X, y), draws=50, tune=50, chains=1, cores=1)


def test_separation_with_proper_priors_samples():
    """Proper priors make the posterior proper: finite draws, no divergence, no error."""
    X, y = _separated()
    post = mle_ppl.sample(logistic(X, y), priors={"beta": "Normal(0, 2.5)"}, draws=300,
                          tune=300, chains=2, cores=1, random_seed=2)
    beta = post["posterior"]["beta"].values
    assert np.isfinite(beta).all()
    # the prior sd is 2.5: the slope is pulled to a few units, far from the MLE's "infinity"
    assert 0 < beta[..., 1].mean() < 10
    assert int(post["sample_stats"]["diverging"].sum()) == 0
    assert json.loads(post["posterior"].attrs["mle_ppl_priors"]) == {"beta": "Normal(0, 2.5)"}


@pytest.fixture(scope="module")
def shrink():
    """y_i ~ Normal(mu, 1), n = 10: conjugate with a Normal(0, tau) prior on mu."""
    y = np.array([1.9, 2.4, 1.1, 2.8, 2.2, 1.7, 3.1, 2.0, 2.6, 1.5])
    with pm.Model() as model:
        mu = pm.Flat("mu")
        pm.Normal("y", mu, 1.0, observed=y)
    return y, model


def test_proper_prior_shrinks_to_closed_form(shrink):
    y, model = shrink
    tau = 0.5
    post = mle_ppl.sample(model, priors={"mu": f"Normal(0, {tau})"}, draws=800, tune=400,
                          chains=2, cores=1, random_seed=4)
    n = len(y)
    v = 1 / (n + 1 / tau**2)  # posterior variance (σ = 1 known)
    m = v * n * y.mean()  # posterior mean: shrunk from ȳ towards the prior mean 0
    draws = post["posterior"]["mu"]
    mcse = float(arviz_stats.mcse(post, var_names=["mu"])["mu"])
    assert abs(float(draws.mean()) - m) < 4 * mcse
    assert 0 < float(draws.mean()) < y.mean()  # shrinkage towards 0
    mcse_sd = float(arviz_stats.mcse(post, var_names=["mu"], method="sd")["mu"])
    assert abs(float(draws.std()) - math.sqrt(v)) < 4 * mcse_sd
    # the original model is untouched (flat prior), so the MLE is still ȳ
    assert mle_ppl.fit(model).estimates["mu"] == pytest.approx(y.mean(), abs=1e-8)
    fit = mle_ppl.fit(model)
    cmp = mle_ppl.compare(fit, post, laplace_draws=0)
    assert not cmp.flat_priors and not cmp.table.loc["mu", "agrees"]
    assert any("priors pull" in n for n in cmp.notes)


def test_output_groups_and_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2))
    y = X @ np.array([1.0, -0.5]) + 0.3 + rng.normal(size=40)
    model = gaussian_linear(X, y, ["u", "v"])
    post = mle_ppl.sample(model, draws=200, tune=200, chains=2, cores=1, random_seed=9)
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert group in post.children
    assert post["log_likelihood"]["y"].shape == (2, 200, 40)  # pointwise
    # same variable names and dims as the MLE's DataTree, so ArviZ tools work on both
    mle_tree = mle_ppl.fit(model).to_datatree()
    for name in ("alpha", "beta", "sigma"):
        assert post["posterior"][name].dims == mle_tree["posterior"][name].dims
    assert list(post["posterior"]["beta"].coords["x"].values) == ["u", "v"]
    path = tmp_path / "post.nc"
    post.to_netcdf(path, engine="netcdf4")
    with xr.open_datatree(path, engine="netcdf4") as back:
        back = back.load()
    for group in post.children:
        xr.testing.assert_allclose(back[group].to_dataset(), post[group].to_dataset())


@pytest.mark.parametrize("laplace", [0, 40])
@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_fit_datatree_roundtrip(tmp_path, laplace, fmt):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 1))
    y = 2 * X[:, 0] + rng.normal(size=30)
    fit = mle_ppl.fit(gaussian_linear(X, y))
    tree = fit.to_datatree(laplace_draws=laplace, random_seed=1)
    if fmt == "netcdf":
        path = tmp_path / "fit.nc"
        tree.to_netcdf(path, engine="netcdf4")
        with xr.open_datatree(path, engine="netcdf4") as back:
            back = back.load()
    else:
        path = tmp_path / "fit.zarr"
        tree.to_zarr(path, consolidated=False)
        with xr.open_datatree(path, engine="zarr", consolidated=False) as back:
            back = back.load()
    assert set(back.children) == set(tree.children)
    for group in tree.children:
        xr.testing.assert_allclose(back[group].to_dataset(), tree[group].to_dataset())
    assert list(back["fit"]["label"].values) == list(fit.labels)


def test_laplace_sample_stats_are_densities():
    """lp − log_q is constant for an exactly Gaussian log-likelihood in an unbounded parameter."""
    y = np.array([0.5, 1.5, 1.0, 2.0])
    with pm.Model() as model:
        mu = pm.Flat("mu")
        pm.Normal("y", mu, 1.0, observed=y)
    tree = mle_ppl.fit(model).to_datatree(laplace_draws=50, random_seed=0)
    diff = (tree["sample_stats"]["lp"] - tree["sample_stats"]["log_q"]).values
    assert np.ptp(diff) < 1e-8


@pytest.mark.filterwarnings("ignore::mle_ppl.SamplingWarning")  # short run; not the point here
def test_bundled_model_large_n_flat_posterior_near_mle():
    """logistic_regression (n = 300) with flat priors: posterior mean ≈ MLE, sd ≈ SE."""
    fit = mle_ppl.fit("logistic_regression")
    post = mle_ppl.sample("logistic_regression", priors="flat", draws=500, tune=500, chains=2,
                          cores=1, random_seed=7)
    assert set(json.loads(post["posterior"].attrs["mle_ppl_priors"]).values()) == {"Flat"}
    cmp = mle_ppl.compare(fit, post, laplace_draws=0)
    tab = cmp.table
    for lab, row in tab.iterrows():
        # Posterior mean − mode is O(1/n) for a smooth likelihood, i.e. O(SE/sqrt(n)) in SE
        # units: ~0.06·c SE at n = 300 with c the standardised third derivative (order 1 for
        # logistic coefficients of order 1). 0.2 SE bounds it; the MC part is 4 MCSE.
        assert abs(row["mean"] - row["mle"]) < 4 * row["mcse_mean"] + 0.2 * row["std_err"], lab
        assert abs(row["sd_ratio"] - 1) < 0.15 + 4 * row["mcse_sd"] / row["std_err"], lab


def test_bundled_model_file_priors_by_default():
    """The file's [priors] table is used unless priors='flat' (or file_priors=False)."""
    from mle_ppl._src.bayes.sample import _merge_priors

    spec = mle_ppl.load_model("logistic_regression")

    assert _merge_priors(spec, None) == spec.priors
    assert _merge_priors(spec, {"alpha": "flat"}) == {"beta": spec.priors["beta"]}
    assert _merge_priors(spec, "flat") == {}
    assert _merge_priors(spec, {"beta": "Normal(0, 1)"}, file_priors=False) == {
        "beta": "Normal(0, 1)"}


def test_with_priors_keeps_order_dims_and_support():
    X = np.zeros((5, 2))
    model = gaussian_linear(X, np.zeros(5), ["p", "q"])
    new = with_priors(model, {"beta": "Normal(0, 1)", "sigma": pm.Normal.dist(0, 1)})
    assert [rv.name for rv in new.free_RVs] == ["alpha", "beta", "sigma"]
    assert new.named_vars_to_dims["beta"] == ("x",)
    assert type(new["beta"].owner.op).__name__ == "NormalRV"
    # sigma keeps its log transform: the Normal(0, 1) prior acts on σ > 0 (a half-normal)
    assert new.rvs_to_values[new["sigma"]].name == "sigma_log__"
    assert type(model["beta"].owner.op).__name__ == "FlatRV"  # original untouched


def test_prior_parsing_and_errors():
    cls, args, kwargs = parse_prior("b", "StudentT(3, mu=-1, sigma=2.5e0)")
    assert cls is pm.StudentT and args == (3,) and kwargs == {"mu": -1, "sigma": 2.5}
    with pytest.raises(mle_ppl.MLEError, match="Did you mean 'Normal'"):
        parse_prior("b", "Normall(0, 1)")
    with pytest.raises(mle_ppl.MLEError, match="not a continuous PyMC distribution"):
        parse_prior("b", "Poisson(3)")
    with pytest.raises(mle_ppl.MLEError, match="must be numbers"):
        parse_prior("b", "Normal(mu, 1)")
    with pytest.raises(mle_ppl.MLEError, match="expected a distribution call"):
        parse_prior("b", "0.5")
    X = np.zeros((5, 2))
    model = gaussian_linear(X, np.zeros(5))
    with pytest.raises(mle_ppl.MLEError, match="Did you mean 'beta'"):
        mle_ppl.sample(model, priors={"betta": "Normal(0, 1)"})
    with pytest.raises(mle_ppl.MLEError, match="draws="):
        mle_ppl.sample(model, draws=0)
    with pytest.raises(mle_ppl.MLEError, match="target_accept"):
        mle_ppl.sample(model, target_accept=1.5)
    with pytest.raises(mle_ppl.MLEError, match="'flat'"):
        mle_ppl.sample(model, priors="Normal(0, 1)")
