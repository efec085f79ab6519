"""``mle-ppl sample`` and ``mle-ppl compare`` from the command line (in-process)."""

import json

import matplotlib

matplotlib.use("Agg")  # no display in CI

import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import mle_ppl  # noqa: E402
from mle_ppl._src.cli import main  # noqa: E402

FAST = ["--draws", "300", "--tune", "300", "--chains", "2", "--cores", "1", "--seed", "1"]


def test_compare_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "cmp.png"
    status = main(["compare", "poisson_exposure", "--flat", *FAST, "--laplace-draws", "300",
                   "--plot", str(plot), "--json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    fit = mle_ppl.fit("poisson_exposure")
    assert set(doc["parameters"]) == set(fit.labels)
    for lab in fit.labels:
        assert doc["parameters"][lab]["mle"] == pytest.approx(fit.estimates[lab], rel=1e-6)
    assert doc["model_stats"]["loglik"] == pytest.approx(fit.loglik, rel=1e-9)
    assert set(doc["priors"].values()) == {"Flat"}
    assert doc["plots"] == [str(plot), str(tmp_path / "cmp_densities.png")]
    assert plot.exists() and (tmp_path / "cmp_densities.png").exists()
    sampling_bad = any(not w.startswith("ELPD-LOO") for w in doc["warnings"])
    assert status == (0 if fit.trustworthy and not sampling_bad else 1)

def test_sample_text_and_out(tmp_path, capsys):
    out_file = tmp_path / "post.nc"
    status = main(["sample", "logistic_regression", *FAST, "--out", str(out_file)])
    out, _ = capsys.readouterr()
    # the file's [priors] table is used by default
    assert "alpha ~ Normal(0, 2.5)" in out and "beta[x1]" in out
    assert status in (0, 1)
    with xr.open_datatree(out_file, engine="netcdf4") as back:
        assert back["posterior"]["beta"].shape == (2, 300, 2)
        assert "log_likelihood" in back.children


@pytest.mark.parametrize("argv, message", [
    (["sample", "logistic_regression", "--prior", "beta"], "expected NAME=DIST"),
    (["sample", "logistic_regression", "--prior", "gamma=Normal(0, 1)"], "gamma"),
    (["sample", "logistic_regression", "--out", "post.csv"], ".nc (netCDF4) or .zarr"),
    (["compare", "logistic_regression", "--plot", "cmp.jpg"], "expected a name ending in"),
    (["compare", "logistic_regression", "--level", "2"], "--level"),
])
def test_bad_input_exit_2(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err


def test_sample_summary_names_hdi_like_compare():
    # issue 12: `sample` said hdi95_lb/hdi95_ub, `compare` hdi_lower/hdi_upper; one naming now.
    import arviz_stats
    import numpy as np

    from mle_ppl._src.bayes.compare import COLUMNS
    from mle_ppl._src.cli.sample import summary_table

    rng = np.random.default_rng(0)
    post = xr.Dataset({"mu": (("chain", "draw"), rng.normal(size=(2, 400)))})
    tree = xr.DataTree.from_dict({"posterior": post})
    tab = summary_table(tree)
    assert {"hdi_lower", "hdi_upper"} <= set(tab.columns) <= set(COLUMNS) | {
        "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat", "mean", "sd"}
    ref = arviz_stats.hdi(post, prob=0.95)["mu"].values  # the same HDI, computed directly
    assert tab.loc["mu", "hdi_lower"] == pytest.approx(ref[0], rel=1e-12)
    assert tab.loc["mu", "hdi_upper"] == pytest.approx(ref[1], rel=1e-12)
