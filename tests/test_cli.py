"""The ``mle-ppl`` command line run as a user runs it: a subprocess, ``python -m mle_ppl ...``.

Covers ``demo`` (the main job), ``--help`` of every subcommand, ``--out``/``--quiet`` and the
behaviour every subcommand shares: exit statuses, no traceback on a user mistake, nothing on
stdout on exit 2, and nothing at all on stderr on success (no spurious warnings). The numbers the
demo prints are checked against independent references (NIST's certified Longley values,
statsmodels). Subcommand-specific behaviour is tested beside each subcommand
(test_closed_form_demos, test_compare_cli, test_profile, ...).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mle_ppl._src.cli import COMMANDS
from mle_ppl._src.cli.demo import BAYES_MODEL, DEFAULT_MODELS

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

# NIST StRD certified values for Longley (https://www.itl.nist.gov/div898/strd/lls/data/
# Longley.shtml), 15 significant digits: intercept, GNPDEFL, GNP, UNEMP, ARMED, POP, YEAR, and
# the residual standard deviation sqrt(RSS/(n - p)).
LONGLEY_CERTIFIED = {
    "alpha": -3482258.63459582, "beta[GNPDEFL]": 15.0618722713733,
    "beta[GNP]": -0.358191792925910e-01, "beta[UNEMP]": -2.02022980381683,
    "beta[ARMED]": -1.03322686717359, "beta[POP]": -0.511041056535807e-01,
    "beta[YEAR]": 1829.15146461355,
}
LONGLEY_RESIDUAL_SD = 304.854073561965


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900):
    """``python -m mle_ppl ARGS`` in a fresh process, as from a shell (not a terminal)."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)  # what a user gets: the interpreter's default filters
    return subprocess.run([sys.executable, "-m", "mle_ppl", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)


def assert_clean_success(res, status: int = 0) -> None:
    assert res.returncode == status, res.stdout[-2000:] + res.stderr[-2000:]
    # a fresh install must not show warnings (BLAS, FutureWarning, ...) or progress debris
    assert res.stderr == "", res.stderr


def assert_user_error(res, command: str, *fragments: str) -> None:
    """Exit 2, nothing on stdout, one message on stderr naming the command, no traceback."""
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    err = res.stderr.strip()
    assert err.startswith(f"mle-ppl {command}: error:"), err
    assert "\n" not in err, err
    for frag in fragments:
        assert frag in err, err


# --------------------------------------------------------------------------------- demo
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "results"   # does not exist yet: demo creates it
    return run_cli("demo", "--out", str(out)), out


def test_demo_exit_status_output_and_no_stderr(demo_run):
    res, _ = demo_run
    assert_clean_success(res)
    for name in DEFAULT_MODELS:
        assert name in res.stdout
    assert res.stdout.count("all identities hold") == len(DEFAULT_MODELS)
    assert "Every fit is trustworthy and every closed-form identity holds." in res.stdout
    assert "beta[GNPDEFL]" in res.stdout  # labels survive rich markup
    assert "MLE vs Bayes" not in res.stdout  # only with --bayes


def test_demo_numbers_match_nist_longley(demo_run):
    _, out = demo_run
    doc = json.loads((out / "demo.json").read_text())
    params = doc["models"]["linear_regression"]["parameters"]
    # Longley is the classic ill-conditioned design (condition number ~1e8 after centring); the
    # certified values have 15 digits and our Newton + refinement reaches ~1e-11 relative, so
    # 1e-8 relative leaves a wide margin while any optimizer failure (typically 1e-3) fails.
    for label, certified in LONGLEY_CERTIFIED.items():
        assert params[label]["estimate"] == pytest.approx(certified, rel=1e-8)
    # MLE sigma^2 = RSS/n, the certified residual sd is sqrt(RSS/(n-p)) with n=16, p=7
    sigma_mle = LONGLEY_RESIDUAL_SD * math.sqrt((16 - 7) / 16)
    assert params["sigma"]["estimate"] == pytest.approx(sigma_mle, rel=1e-8)
    assert doc["ok"] is True and doc["problems"] == []


def test_demo_numbers_match_statsmodels(demo_run):
    sm = pytest.importorskip("statsmodels.api")
    _, out = demo_run
    doc = json.loads((out / "demo.json").read_text())

    # Logistic regression: statsmodels' Newton on the same CSV. Both converge to ~1e-10 in the
    # score, so 1e-6 relative on estimates and standard errors is far above the noise.
    d = pd.read_csv(MODELS_DIR / "data" / "logistic_regression.csv")
    ref = sm.Logit(d["y"], sm.add_constant(d[["x1", "x2"]])).fit(disp=0, tol=1e-12)
    got = doc["models"]["logistic_regression"]["parameters"]
    for ours, theirs in (("alpha", "const"), ("beta[x1]", "x1"), ("beta[x2]", "x2")):
        assert got[ours]["estimate"] == pytest.approx(ref.params[theirs], rel=1e-6)
        assert got[ours]["std_err"] == pytest.approx(ref.bse[theirs], rel=1e-6)
    assert doc["models"]["logistic_regression"]["loglik"] == pytest.approx(ref.llf, rel=1e-9)

    # Multinomial logit with setosa (statsmodels' first, sorted level) as the reference.
    iris = pd.read_csv(MODELS_DIR / "data" / "iris.csv")
    codes = pd.Categorical(iris["species"], categories=["setosa", "versicolor", "virginica"])
    mref = sm.MNLogit(codes.codes, sm.add_constant(iris[["sepal_length"]])).fit(
        disp=0, method="newton", tol=1e-12, maxiter=100)
    got = doc["models"]["multinomial_logistic"]["parameters"]
    for j, level in enumerate(["versicolor", "virginica"]):
        assert got[f"alpha[{level}]"]["estimate"] == pytest.approx(mref.params.iloc[0, j],
                                                                   rel=1e-6)
        assert got[f"beta[sepal_length, {level}]"]["estimate"] == pytest.approx(
            mref.params.iloc[1, j], rel=1e-6)
    assert doc["models"]["multinomial_logistic"]["loglik"] == pytest.approx(mref.llf, rel=1e-9)


def test_demo_out_writes_datatrees(demo_run):
    res, out = demo_run
    doc = json.loads((out / "demo.json").read_text())
    assert sorted(doc["files"]) == sorted(str(out / f"{m}.nc") for m in DEFAULT_MODELS)
    for name in DEFAULT_MODELS:
        assert f"written: {out / name}.nc" in res.stdout
        with xr.open_datatree(out / f"{name}.nc") as tree:
            assert {"posterior", "log_likelihood", "observed_data"} <= set(tree.children)
            params = doc["models"][name]["parameters"]
            # the posterior group holds the MLE as one draw, under the model's variable names
            for var in tree["posterior"].data_vars:
                flat = np.ravel(tree["posterior"][var].values)
                labels = [lab for lab in params if lab == var or lab.startswith(f"{var}[")]
                assert flat.size == len(labels)
                expect = sorted(params[lab]["estimate"] for lab in labels)
                np.testing.assert_allclose(sorted(flat), expect, rtol=1e-12)


def test_demo_quiet_prints_nothing():
    res = run_cli("demo", "--quiet", "--model", "logistic_regression")
    assert_clean_success(res)
    assert res.stdout == ""


def test_demo_json_is_one_document():
    res = run_cli("demo", "--json", "--model", "linear_regression", "--model",
                  "poisson_exposure")
    assert_clean_success(res)
    doc = json.loads(res.stdout)
    assert list(doc["models"]) == ["linear_regression", "poisson_exposure"]
    assert doc["models"]["linear_regression"]["closed_form"]["agrees"] is True
    # no closed form for a Poisson model: reported, not a failure
    assert doc["models"]["poisson_exposure"]["closed_form"]["applies"] is False
    assert doc["ok"] is True


def test_demo_stopped_early_exits_1():
    res = run_cli("demo", "--model", "logistic_regression", "--method", "gd", "--max-iter", "5")
    assert_clean_success(res, status=1)
    assert "demo found problems" in res.stdout
    assert "FAILS" in res.stdout or "did not converge" in res.stdout


@pytest.mark.slow
def test_demo_bayes(tmp_path):
    res = run_cli("demo", "--bayes", "--model", "linear_regression", "--out", str(tmp_path))
    assert res.stderr == "", res.stderr
    doc = json.loads((tmp_path / "demo.json").read_text())
    cmp = doc["comparison"]
    assert cmp["model"] == BAYES_MODEL and set(cmp["priors"].values()) == {"Flat"}
    # exit 0 exactly when nothing went wrong, sampling included
    assert res.returncode == (0 if doc["ok"] else 1)
    assert "MLE vs Bayes" in res.stdout
    for f in (f"{BAYES_MODEL}_posterior.nc", f"{BAYES_MODEL}_forest.png",
              f"{BAYES_MODEL}_forest_densities.png"):
        assert (tmp_path / f).stat().st_size > 0
    with xr.open_datatree(tmp_path / f"{BAYES_MODEL}_posterior.nc") as post:
        assert post["posterior"].sizes["chain"] == 2


# ------------------------------------------------------------------------------- --help
def test_top_level_help_lists_every_command():
    res = run_cli("--help")
    assert_clean_success(res)
    for name in COMMANDS:
        assert name in res.stdout
    assert "Exit status" in res.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help_has_examples(command):
    res = run_cli(command, "--help")
    assert_clean_success(res)
    assert res.stdout.startswith(f"usage: mle-ppl {command}")
    examples = res.stdout.split("examples:\n", 1)[1]
    assert examples.count(f"mle-ppl {command}") >= 2
    if command != "models":
        assert "exit status" in res.stdout.lower()


def test_version():
    import mle_ppl

    res = run_cli("--version")
    assert_clean_success(res)
    assert res.stdout.strip() == f"mle-ppl {mle_ppl.__version__}"


def test_no_command_prints_help_on_stderr():
    res = run_cli()
    assert res.returncode == 2 and res.stdout == ""
    assert "usage: mle-ppl" in res.stderr


# ----------------------------------------------------------- mistakes: exit 2, no traceback
@pytest.mark.parametrize("argv", [
    ["fit", "no_such_model"], ["check", "no_such_model"], ["sample", "no_such_model"],
    ["compare", "no_such_model"], ["models", "no_such_model"],
    ["demo", "--model", "no_such_model"],
])
def test_unknown_model_in_every_command(argv):
    assert_user_error(run_cli(*argv), argv[0], "no_such_model")


@pytest.mark.parametrize("argv, fragments", [
    (["fit", "linear_regression", "--out", "nowhere/fit.nc"], ["nowhere"]),
    (["demo", "--method", "newtn"], ["newton"]),
    (["demo", "--max-iter", "0"], ["--max-iter"]),
])
def test_bad_options_exit_2(tmp_path, argv, fragments):
    assert_user_error(run_cli(*argv, cwd=tmp_path), argv[0], *fragments)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_demo_out_must_be_a_folder(tmp_path):
    (tmp_path / "taken").write_text("x")
    assert_user_error(run_cli("demo", "--out", str(tmp_path / "taken")), "demo", "folder")


@pytest.mark.parametrize("argv, fragment", [
    (["fit"], "MODEL"), (["fit", "linear_regression", "--no-such-option"], "--no-such-option"),
    (["sample", "logistic_regression", "--draws", "many"], "--draws")])
def test_argparse_errors_exit_2_in_one_line(argv, fragment):
    # one line naming the option and pointing to --help (no usage block)
    assert_user_error(run_cli(*argv), argv[0], fragment, f"mle-ppl {argv[0]} --help")


# ------------------------------------------------------------------- fit --out / --quiet
def test_fit_out_zarr_and_quiet_prints_nothing(tmp_path):
    # (--out FILE.nc with --json: test_cli_fit.py)
    path = tmp_path / "fit.zarr"
    res = run_cli("fit", "logistic_regression", "--out", str(path), "--quiet")
    assert_clean_success(res)
    assert res.stdout == ""
    ref = json.loads(run_cli("fit", "logistic_regression", "--json").stdout)
    with xr.open_datatree(path, engine="zarr") as tree:
        assert float(tree["posterior"]["alpha"].values.ravel()[0]) == pytest.approx(
            ref["parameters"]["alpha"]["estimate"], rel=1e-12)
        beta = tree["posterior"]["beta"].values.ravel()
        np.testing.assert_allclose(
            beta, [ref["parameters"][f"beta[{c}]"]["estimate"] for c in ("x1", "x2")],
            rtol=1e-12)
        assert tree["log_likelihood"]["y"].size == ref["n_obs"]


def test_models_lists_every_bundled_file():
    res = run_cli("models", "--json")
    assert_clean_success(res)
    listed = set(json.loads(res.stdout))
    on_disk = {p.stem for p in MODELS_DIR.glob("*.toml")} | {
        p.stem for p in MODELS_DIR.glob("*.py") if not p.stem.startswith("_")}
    assert listed == on_disk
    assert all(desc for desc in json.loads(res.stdout).values())
