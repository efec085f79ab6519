"""``mle-ppl fit`` and ``mle-ppl models`` run as a user runs them: a subprocess.

Checks exit statuses (0 fitted, 1 not trustworthy, 2 bad input), the JSON document of docs/json.md,
stderr content (one line, no traceback) and that nothing is written on bad input.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

#: The keys of the JSON document scripts rely on (the full list: docs/json.md, tests/test_docs.py).
DESIGN_KEYS = {"model", "n_obs", "n_params", "method", "converged", "loglik", "aic", "bic",
               "parameters", "diagnostics", "warnings"}


def run(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "mle_ppl", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def assert_clean_error(rc, out, err, *fragments):
    assert rc == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for f in fragments:
        assert f in err, err


MODEL = """
[model]
name = "my_model"
description = "straight line"
[data]
y = "y"
x = ["x1"]
[parameters]
alpha = {}
beta = { dims = "x" }
sigma = { lower = 0 }
[likelihood]
y = { distribution = "Normal", mu = "alpha + x @ beta", sigma = "sigma" }
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(7)
    x = rng.normal(size=30)
    df = pd.DataFrame({"x1": x, "y": 0.5 + 1.5 * x + rng.normal(size=30)})
    df.to_csv(d / "data.csv", index=False)
    df.rename(columns={"x1": "x_1"}).to_csv(d / "renamed.csv", index=False)
    (d / "model.toml").write_text(MODEL)
    (d / "broken.toml").write_text(MODEL.replace('"alpha + x @ beta"', '"alpha + x @ betta"'))
    return d, df


def test_fit_json_document(files, tmp_path):
    d, df = files
    out_file = tmp_path / "fit.nc"
    rc, out, err = run("fit", d / "model.toml", "--data", d / "data.csv", "--json",
                       "--out", out_file)
    assert rc == 0, err
    assert err == ""
    doc = json.loads(out)  # exactly one JSON document
    assert DESIGN_KEYS <= set(doc)
    assert doc["model"] == "my_model" and doc["n_obs"] == 30 and doc["n_params"] == 3
    assert doc["converged"] is True and doc["warnings"] == []
    assert set(doc["parameters"]) == {"alpha", "beta[x1]", "sigma"}
    assert set(doc["parameters"]["alpha"]) >= {"estimate", "std_err", "ci_lower", "ci_upper"}
    assert set(doc["diagnostics"]) >= {"grad_norm", "hessian_min_eig", "hessian_cond",
                                       "iterations"}
    # closed form: least squares, sigma^2 = RSS/n (Newton converged to ~1e-8 relative)
    X = np.column_stack([np.ones(30), df.x1])
    coef, rss, *_ = np.linalg.lstsq(X, df.y, rcond=None)
    assert doc["parameters"]["alpha"]["estimate"] == pytest.approx(coef[0], rel=1e-7)
    assert doc["parameters"]["beta[x1]"]["estimate"] == pytest.approx(coef[1], rel=1e-7)
    assert doc["parameters"]["sigma"]["estimate"] == pytest.approx(np.sqrt(rss[0] / 30), rel=1e-7)
    # the Gaussian log-likelihood at the MLE: -n/2 (log(2 pi sigma^2) + 1)
    s2 = rss[0] / 30
    assert doc["loglik"] == pytest.approx(-15 * (np.log(2 * np.pi * s2) + 1), rel=1e-10)
    assert doc["aic"] == pytest.approx(6 - 2 * doc["loglik"], rel=1e-12)
    # 95 % Wald interval
    p = doc["parameters"]["beta[x1]"]
    assert p["ci_upper"] - p["estimate"] == pytest.approx(1.959963984540054 * p["std_err"],
                                                          rel=1e-9)
    tree = xr.open_datatree(out_file)
    assert {"posterior", "fit", "log_likelihood", "observed_data"} <= set(tree.children)
    np.testing.assert_allclose(tree["posterior"]["beta"].values.ravel(), [coef[1]], rtol=1e-7)


def test_fit_table_for_bundled_model():
    rc, out, err = run("fit", "linear_regression")
    assert rc == 0, err
    assert "beta[GNPDEFL]" in out and "std. error" in out and "linear_regression" in out
    assert "-3.48226e+06" in out  # NIST certified intercept -3482258.63...


def test_profile_ci_prints_one_labelled_table():
    # issue 12: `--ci profile` printed an unlabelled Wald table and then the profile one.
    rc, out, err = run("fit", "poisson_exposure", "--ci", "profile")
    assert rc == 0, err
    assert out.count("parameter ") == 1  # one table header
    assert "std. error: inverse observed information; 95% profile-likelihood intervals" in out
    assert "95% profile lower" in out and "95% Wald" not in out
    rc, js, err = run("fit", "poisson_exposure", "--ci", "profile", "--json")
    doc = json.loads(js)
    row = next(line for line in out.splitlines() if line.startswith("beta[age] "))
    lo, hi = (float(t) for t in row.split()[-2:])
    # shown with 6 significant digits: a correct rounding of the JSON's full-precision bounds
    p = doc["parameters"]["beta[age]"]
    assert lo == pytest.approx(p["ci_lower"], rel=5e-6)
    assert hi == pytest.approx(p["ci_upper"], rel=5e-6)


def test_not_trustworthy_exits_1_with_json(files):
    d, _ = files
    rc, out, err = run("fit", "logistic_regression", "--max-iter", "1", "--json")
    assert rc == 1, err
    doc = json.loads(out)
    assert doc["converged"] is False and doc["warnings"]


def test_unknown_model_and_broken_file(files):
    d, _ = files
    assert_clean_error(*run("fit", "linear_regresion"), "Did you mean 'linear_regression'")
    assert_clean_error(*run("fit", d / "broken.toml", "--json"),
                       "broken.toml", "likelihood.y.mu", "Did you mean 'beta'")


def test_bad_data_writes_nothing(files, tmp_path):
    d, _ = files
    out_file = tmp_path / "fit.nc"
    rc, out, err = run("fit", d / "model.toml", "--data", d / "renamed.csv", "--json",
                       "--out", out_file)
    assert_clean_error(rc, out, err, "data.x", "'x1'", "Did you mean 'x_1'")
    assert not out_file.exists()
    assert list(tmp_path.iterdir()) == []
    assert_clean_error(*run("fit", d / "model.toml", "--data", d / "missing.csv"),
                       "does not exist")
    assert_clean_error(*run("fit", d / "model.toml", "--out", tmp_path / "fit.txt"),
                       "unknown format '.txt'")
    assert list(tmp_path.iterdir()) == []


def test_bad_method_is_exit_2():
    rc, out, err = run("fit", "linear_regression", "--method", "bogus")
    assert rc == 2 and out == "" and "invalid choice: 'bogus'" in err


def test_models_command():
    rc, out, err = run("models")
    assert rc == 0, err
    for name in ("linear_regression", "logistic_regression", "multinomial_logistic",
                 "poisson_exposure", "negative_binomial", "robust_regression",
                 "exponential_decay", "heteroscedastic", "binomial_trials"):
        assert name in out
    rc, out, err = run("models", "logistic_regression")
    assert rc == 0 and 'distribution = "Bernoulli"' in out
    assert_clean_error(*run("models", "logistic"), "unknown bundled model 'logistic'")
