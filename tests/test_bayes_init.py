"""NUTS started at the MLE with a mass matrix from the observed information (``init="mle"``)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest

import mle_ppl
from mle_ppl._src.bayes.init import DENSE_CORRELATION, max_abs_correlation, mle_nuts_setup
from mle_ppl._src.cli import main
from mle_ppl._src.engine.fit import resolve_model
from mle_ppl._src.errors import MLEError

STACKLOSS_TOML = Path(__file__).resolve().parents[1] / "benchmarks" / "stackloss.toml"
STACKLOSS_CSV = Path(__file__).resolve().parents[1] / "models" / "data" / "stackloss.csv"


@pytest.fixture(scope="module")
def stack_fit():
    return mle_ppl.fit(str(STACKLOSS_TOML))


def test_stackloss_setup_is_dense_with_the_ols_correlations(stack_fit):
    model, *_ = resolve_model(str(STACKLOSS_TOML), None)
    setup, why = mle_nuts_setup(stack_fit, model)
    assert why is None and setup.dense
    # Reference: for OLS the coefficients' covariance is sigma^2 (X'X)^-1, so their correlation
    # is that of (X'X)^-1 (NumPy, independent of mle-ppl); log sigma is uncorrelated with them
    # at the MLE (block-diagonal information). Tolerance: Hessian rounding, ~1e-8 relative.
    df = pd.read_csv(STACKLOSS_CSV)
    X = np.column_stack([np.ones(len(df)), df[["AIRFLOW", "WATERTEMP", "ACIDCONC"]]])
    inv = np.linalg.inv(X.T @ X)
    sd = np.sqrt(np.diag(inv))
    ref = inv / np.outer(sd, sd)
    cov = setup.cov
    got = cov[:4, :4] / np.outer(np.sqrt(np.diag(cov[:4, :4])), np.sqrt(np.diag(cov[:4, :4])))
    np.testing.assert_allclose(got, ref, atol=1e-7)
    assert abs(cov[4, :4]).max() < 1e-8 * np.sqrt(cov[4, 4] * np.diag(cov[:4, :4])).max()
    assert setup.max_correlation == pytest.approx(np.abs(ref - np.eye(4)).max(), abs=1e-7)
    assert setup.max_correlation > DENSE_CORRELATION
    # the start is the MLE, by variable name, on the user's scale
    np.testing.assert_allclose(setup.initvals["beta"], stack_fit.estimates.iloc[1:4], rtol=1e-12)
    assert setup.value_names == ("alpha", "beta", "sigma_log__")


def test_uncorrelated_parameters_get_a_diagonal_mass_matrix():
    # Normal mean and log-sd are orthogonal at the MLE: correlation 0 exactly.
    y = np.array([1.0, 2.0, 4.0, 3.0, 2.5, 0.5])
    with pm.Model() as m:
        mu = pm.Flat("mu")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu, sigma, observed=y)
    fit = mle_ppl.fit(m)
    setup, why = mle_nuts_setup(fit, m)
    assert why is None and not setup.dense
    assert setup.max_correlation < 1e-8
    assert max_abs_correlation(np.array([[2.0]])) == 0.0


def test_bad_init_is_an_mle_error():
    with pytest.raises(MLEError, match="init='map'.*'mle', 'pymc'"):
        mle_ppl.sample("linear_regression", init="map", draws=10, tune=10, chains=1)


@pytest.mark.slow
def test_compare_stackloss_flat_priors_has_no_divergences(capsys):
    # Issue 12: with PyMC's default init this compare reported 9 divergences (83 with --seed 1,
    # 4 chains x 1000). Started at the MLE with the dense information mass matrix: none.
    status = main(["compare", str(STACKLOSS_TOML), "--flat", "--draws", "500", "--tune", "500",
                   "--chains", "2", "--cores", "1", "--seed", "1", "--laplace-draws", "0",
                   "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert not any("divergent" in w for w in doc["warnings"]), doc["warnings"]
    assert doc["init"].startswith("mle: NUTS started at the MLE; dense")
    assert status == 0, doc["warnings"]


@pytest.mark.slow
def test_benchmark_script_quick_run(tmp_path):
    # benchmarks/bench_bayes_init.py --quick: stack loss, one seed, tune 200, both inits.
    # Timings are not asserted (shared machine); the MLE start must not diverge.
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bayes_init.py"
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| stackloss | mle |" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["init"] for r in rows} == {"mle", "pymc"}
    mle = next(r for r in rows if r["init"] == "mle")
    assert mle["divergences"] == 0 and mle["init_used"].startswith("mle: ")
