"""Data beyond memory (Parquet streamed in chunks) and beyond one machine (Dask): the chunked
objective equals the in-memory fit.

Reference: the in-memory fit of the same model on the same rows (itself checked against
statsmodels elsewhere). Tolerance 1e-8 for estimates in standard-error units and relative SEs:
the sums are the same compiled terms added in another order (rounding, ~1e-15 relative), and
both fits stop at a Newton decrement below 1e-10 (estimates within ~1e-5 SE of the exact
optimum in theory, in practice refined to ~1e-12).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import numpy as np
import pandas as pd
import pytest

import mle_ppl
from mle_ppl import DataError
from mle_ppl._src.engine import likelihood as L
from mle_ppl._src.engine.objective import NotAvailable

FORMULA = """
[model]
name = "lg"
formula = "y ~ x1 + x2 + C(grp) + k"
family = "bernoulli"
"""

CATEG = """
[model]
name = "pois"
[data]
g = { column = "grp", reference = "a" }
x = ["x1"]
y = "count"
[parameters]
c = {}
mu = { dims = "g" }
beta = { dims = "x" }
[likelihood]
y = { distribution = "Poisson", mu = "exp(c + mu[g] + x @ beta)" }
"""


def _frame(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.choice(["a", "b", "c", "d"], size=n)
    g[: n * 2 // 5] = np.where(g[: n * 2 // 5] == "d", "a", g[: n * 2 // 5])  # file 0: no "d"
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    eff = pd.Series(g).map({"a": 0, "b": 0.5, "c": -0.5, "d": 1.0}).to_numpy()
    eta = 0.3 + x1 - 0.5 * x2 + eff
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    count = rng.poisson(np.exp(0.2 + 0.3 * x1 + 0.5 * eff))
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "grp": g, "count": count,
                         "k": rng.choice(["u", "v", "w"], size=n),
                         "firm": rng.integers(0, 40, size=n)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bigdata")
    df = _frame()
    (root / "pq").mkdir()
    bounds = [(0, 1200), (1200, 2000), (2000, 3000)]
    for i, (a, b) in enumerate(bounds):
        df.iloc[a:b].to_parquet(root / "pq" / f"part{i}.parquet", row_group_size=300)
    (root / "lg.toml").write_text(FORMULA)
    (root / "pois.toml").write_text(CATEG)
    return root, df


def _same(a, b, tol=1e-8):
    se = b.std_errors.to_numpy()
    assert list(a.labels) == list(b.labels)
    assert np.max(np.abs(a.estimates.to_numpy() - b.estimates.to_numpy()) / se) < tol
    np.testing.assert_allclose(a.std_errors.to_numpy(), se, rtol=tol)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-12)
    assert a.n_obs == b.n_obs


@pytest.mark.parametrize("model", ["lg.toml", "pois.toml"])
def test_streamed_equals_in_memory_and_compiles_once(data, model):
    root, df = data
    mem = mle_ppl.fit(root / model, data=df)
    before = L.COMPILE_COUNT
    # 350-row chunks over files of 1200/800/1000 rows in 300-row groups: chunks of several
    # lengths (the last of each file shorter), and the first file lacks level "d"
    st = mle_ppl.fit(root / model, data=str(root / "pq" / "*.parquet"), chunk_rows=350)
    compiled_small_chunks = L.COMPILE_COUNT - before
    before = L.COMPILE_COUNT
    st2 = mle_ppl.fit(root / model, data=root / "pq", chunk_rows=100_000)  # one chunk per file
    assert L.COMPILE_COUNT - before == compiled_small_chunks  # chunk count/length: no recompile
    assert compiled_small_chunks <= 3  # value+grad, Hessian, user-scale map
    _same(st, mem)
    _same(st2, mem)
    assert st.source.reading["kind"] == "streamed"
    assert st.source.reading["chunk_rows"] == 350 and st.source.reading["chunks"] >= 10
    assert mem.source.reading == {"kind": "in-memory", "rows": 3000}


def test_streamed_sandwich_lrt_profile(data):
    root, df = data
    mem = mle_ppl.fit(root / "pois.toml", data=df)
    st = mle_ppl.fit(root / "pois.toml", data=str(root / "pq"), chunk_rows=400)
    for kind in ("HC0", "HC1"):
        np.testing.assert_allclose(st.robust_cov(kind).to_numpy(),
                                   mem.robust_cov(kind).to_numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(st.robust_cov("cluster", groups="firm").to_numpy(),
                               mem.robust_cov("cluster", groups="firm").to_numpy(),
                               rtol=1e-9, atol=1e-14)
    assert st.aic == pytest.approx(mem.aic, rel=1e-12)
    assert st.bic == pytest.approx(mem.bic, rel=1e-12)
    # the profile walks the same points with the same inner optimizer: same interval
    np.testing.assert_allclose(st.profile("beta[x1]").interval,
                               mem.profile("beta[x1]").interval, rtol=1e-8)


def test_streamed_lrt(data):
    root, df = data
    small = root / "pois_small.toml"
    small.write_text(CATEG.replace(" + x @ beta", "").replace('beta = { dims = "x" }', "")
                     .replace('x = ["x1"]\n', ""))
    mem = mle_ppl.lrt(mle_ppl.fit(small, data=df), mle_ppl.fit(root / "pois.toml", data=df))
    st = mle_ppl.lrt(mle_ppl.fit(small, data=str(root / "pq"), chunk_rows=700),
                     mle_ppl.fit(root / "pois.toml", data=str(root / "pq"), chunk_rows=700))
    assert st.statistic == pytest.approx(mem.statistic, rel=1e-9)
    assert st.p_value == pytest.approx(mem.p_value, rel=1e-7)


def test_streamed_per_row_quantities_raise_not_available(data):
    root, df = data
    st = mle_ppl.fit(root / "pois.toml", data=str(root / "pq"), chunk_rows=1000)
    with pytest.raises(NotAvailable, match="nonparametric bootstrap refits on resampled"):
        st.bootstrap(n_boot=10)
    with pytest.raises(NotAvailable, match="per-observation"):
        st.likelihood.pointwise(st.x)


def test_memory_budget_switches_to_streaming(data, monkeypatch):
    root, df = data
    mem = mle_ppl.fit(root / "pois.toml", data=df)
    small = mle_ppl.fit(root / "pois.toml", data=str(root / "pq"))  # under the budget
    assert small.source.reading["kind"] == "in-memory"
    _same(small, mem)
    monkeypatch.setenv("MLE_PPL_MEMORY_BUDGET", "10K")
    big = mle_ppl.fit(root / "pois.toml", data=str(root / "pq"))
    assert big.source.reading["kind"] == "streamed"
    assert any("memory budget" in n for n in big.notes)
    _same(big, mem)


def test_bad_files_are_named(data, tmp_path):
    root, df = data
    d = tmp_path / "bad"
    d.mkdir()
    df.iloc[:100].to_parquet(d / "a.parquet")
    bad = df.iloc[100:200].copy()
    bad.loc[bad.index[7], "x1"] = np.nan
    bad.to_parquet(d / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet' rows 0-49.*'x1' has 1 missing.*\[7\]"):
        mle_ppl.fit(root / "pois.toml", data=d, chunk_rows=50)
    (d / "b.parquet").unlink()
    df.iloc[100:200].drop(columns="x1").to_parquet(d / "c.parquet")
    with pytest.raises(DataError, match=r"c\.parquet' has no column 'x1'"):
        mle_ppl.fit(root / "pois.toml", data=d, chunk_rows=50)
    (d / "c.parquet").unlink()
    df.iloc[100:200].astype({"x1": str}).to_parquet(d / "e.parquet")
    with pytest.raises(DataError, match=r"e\.parquet'.*'x1' is text.*floating point"):
        mle_ppl.fit(root / "pois.toml", data=d, chunk_rows=50)
    (d / "e.parquet").unlink()
    df.iloc[:0].to_parquet(d / "empty.parquet")  # a file without rows is fine
    mem = mle_ppl.fit(root / "pois.toml", data=df.iloc[:100])
    _same(mle_ppl.fit(root / "pois.toml", data=d, chunk_rows=30), mem)


def test_stateful_formula_is_refused(data):
    root, _ = data
    (root / "c.toml").write_text(FORMULA.replace("x1 + x2", "center(x1) + x2"))
    with pytest.raises(mle_ppl.MLEError, match=r"center\(\) in a formula is computed from"):
        mle_ppl.fit(root / "c.toml", data=str(root / "pq"), chunk_rows=500)


def test_import_does_not_import_dask():
    code = ("import sys, mle_ppl; mle_ppl.fit; print(any(m == 'dask' or "
            "m.startswith(('dask.', 'distributed')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- Dask
def test_dask_local_scheduler_equals_in_memory(data):
    dd = pytest.importorskip("dask.dataframe")  # the test extra installs it (mle-ppl[dask])
    root, df = data
    mem = mle_ppl.fit(root / "lg.toml", data=df)
    parts = [df.iloc[:1200], df.iloc[1200:1200], df.iloc[1200:2000], df.iloc[2000:]]
    ddf = dd.concat([dd.from_pandas(p, npartitions=1) for p in parts])  # one empty partition
    fit = mle_ppl.fit(root / "lg.toml", data=ddf)
    _same(fit, mem)
    assert fit.source.reading["kind"] == "dask"
    assert fit.source.reading["partitions"] == 4
    assert fit.source.reading["scheduler"].startswith("dask local")


def test_dask_bad_partitions_are_named(data):
    dd = pytest.importorskip("dask.dataframe")
    root, df = data
    bad = df.iloc[:300].copy()
    bad.loc[bad.index[250], "x1"] = np.nan
    ddf = dd.from_pandas(bad, npartitions=3, sort=False)
    with pytest.raises(DataError, match=r"Dask partition 2: .*'x1' has 1 missing.*\[50\]"):
        mle_ppl.fit(root / "pois.toml", data=ddf)
    with pytest.raises(DataError, match=r"Dask DataFrame has no column 'x1'"):
        mle_ppl.fit(root / "pois.toml", data=dd.from_pandas(df.drop(columns="x1"), 2))
    import dask

    text = df.iloc[:300].astype({"x1": str})  # one partition (e.g. one file) holds text
    ddf = dd.from_delayed([dask.delayed(df.iloc[300:600]), dask.delayed(text)],
                          meta=df.iloc[:0], verify_meta=False)
    with pytest.raises(DataError, match=r"Dask partition 1: .*'x1' is not numeric"):
        mle_ppl.fit(root / "pois.toml", data=ddf)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  silence_logs=logging.ERROR, dashboard_address=":0") as lc, \
            distributed.Client(lc) as client:
        yield client


def _compile_count():
    from mle_ppl._src.engine import likelihood

    return likelihood.COMPILE_COUNT


@pytest.mark.slow
def test_local_cluster_equals_in_memory_and_compiles_once_per_worker(data, cluster):
    dd = pytest.importorskip("dask.dataframe")
    root, df = data
    mem = mle_ppl.fit(root / "pois.toml", data=df)
    ddf = dd.from_pandas(df, npartitions=6)
    fit = mle_ppl.fit(root / "pois.toml", data=ddf)
    _same(fit, mem)
    assert fit.source.reading["scheduler"] == cluster.scheduler.address
    first = cluster.run(_compile_count)
    assert all(n > 0 for n in first.values())  # every worker evaluated partitions
    again = mle_ppl.fit(root / "pois.toml", data=ddf)
    assert cluster.run(_compile_count) == first  # the worker cache: no compilation
    _same(again, mem)
    np.testing.assert_allclose(fit.robust_cov("cluster", groups="firm").to_numpy(),
                               mem.robust_cov("cluster", groups="firm").to_numpy(),
                               rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(fit.robust_cov("HC1").to_numpy(),
                               mem.robust_cov("HC1").to_numpy(), rtol=1e-9, atol=1e-14)


@pytest.mark.slow
def test_local_cluster_survives_a_killed_worker(data, cluster, monkeypatch):
    import os
    import signal

    dd = pytest.importorskip("dask.dataframe")
    from mle_ppl._src.engine.chunked import ChunkedObjective

    root, df = data
    mem = mle_ppl.fit(root / "lg.toml", data=df)
    ddf = dd.from_pandas(df, npartitions=4)
    killed = []
    original = ChunkedObjective.hessian

    def hessian_then_kill(self, x):
        if not killed:  # mid-fit: the partitions are persisted, Newton has started
            pids = cluster.run(os.getpid)
            addr, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(addr)
        return original(self, x)

    monkeypatch.setattr(ChunkedObjective, "hessian", hessian_then_kill)
    fit = mle_ppl.fit(root / "lg.toml", data=ddf)
    assert killed
    _same(fit, mem)  # Dask recomputed the lost partitions from their lineage


# ------------------------------------------------------------------------------ CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mle_ppl", *args], capture_output=True,
                          text=True, timeout=600)


def test_cli_chunk_rows_json_and_progress(data):
    import json

    root, df = data
    mem = mle_ppl.fit(root / "pois.toml", data=df)
    r = _cli("fit", str(root / "pois.toml"), "--data", str(root / "pq" / "*.parquet"),
             "--chunk-rows", "400", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["data_source"] == {"kind": "streamed", "source": str(root / "pq" / "*.parquet"),
                                  "files": 3, "rows": 3000, "chunk_rows": 400, "chunks": 8}
    est = np.array([doc["parameters"][lab]["estimate"] for lab in mem.labels])
    assert np.max(np.abs(est - mem.estimates.to_numpy()) / mem.std_errors.to_numpy()) < 1e-8
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("iter ")]
    assert lines and all("rows/s" in ln and ln.rstrip().endswith(" s") for ln in lines)
    assert "is Poisson" in doc["closed_form"]["reason"]  # no closed form, as in memory
    bad = _cli("fit", str(root / "pois.toml"), "--data", str(root / "pq"), "--chunk-rows", "0")
    assert bad.returncode == 2 and "positive integer" in bad.stderr


@pytest.mark.slow
def test_cli_scheduler(data, cluster):
    import json

    root, df = data
    mem = mle_ppl.fit(root / "lg.toml", data=df)
    r = _cli("fit", str(root / "lg.toml"), "--data", str(root / "pq"), "--scheduler",
             cluster.scheduler.address, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["data_source"]["kind"] == "dask"
    assert doc["data_source"]["scheduler"] == cluster.scheduler.address
    assert doc["data_source"]["rows"] == 3000
    est = np.array([doc["parameters"][lab]["estimate"] for lab in mem.labels])
    assert np.max(np.abs(est - mem.estimates.to_numpy()) / mem.std_errors.to_numpy()) < 1e-8


@pytest.mark.slow
def test_streamed_memory_is_bounded_by_the_chunk(tmp_path):
    # Peak of Python/NumPy allocations (tracemalloc) during a fit whose functions are already
    # compiled: streamed in 5,000-row chunks vs in memory, same 100,000 rows x 3 columns
    # (2.4 MB of float64). Reference: the in-memory fit's own peak in the same process; the
    # streamed peak must be under a quarter of it (a chunk is 1/20 of the data).
    import tracemalloc

    rng = np.random.default_rng(5)
    n = 100_000
    df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-df.x1 + 0.5 * df.x2))).astype(np.int64)
    for i in range(4):
        df.iloc[i * 25_000:(i + 1) * 25_000].to_parquet(tmp_path / f"p{i}.parquet")
    spec = mle_ppl.loads_model('[data]\ny = "y"\nx = ["x1", "x2"]\n[parameters]\na = {}\n'
                               'b = { dims = "x" }\n[likelihood]\n'
                               'y = { distribution = "Bernoulli", logit_p = "a + x @ b" }\n',
                               name="m")

    def peak(make):
        make()  # compile (and warm up) outside the measurement
        tracemalloc.start()
        fit = make()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top, fit

    top_mem, mem = peak(lambda: mle_ppl.fit(spec, data=pd.concat(
        [pd.read_parquet(f) for f in sorted(tmp_path.glob("*.parquet"))], ignore_index=True)))
    top_st, st = peak(lambda: mle_ppl.fit(spec, data=tmp_path, chunk_rows=5_000))
    _same(st, mem)
    assert top_st < 0.25 * top_mem, (top_st, top_mem)


def test_random_effects_on_chunked_data_say_not_available(tmp_path):
    rng = np.random.default_rng(2)
    g = rng.integers(0, 5, size=200)
    df = pd.DataFrame({"g": g.astype(str), "x": rng.normal(size=200)})
    df["y"] = 1 + df.x + rng.normal(size=5)[g] + rng.normal(size=200)
    df.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "re.toml").write_text(
        '[data]\ny = "y"\nx = "x"\ng = { column = "g", categorical = true }\n'
        '[parameters]\nb0 = {}\nb1 = {}\nsd_u = { lower = 0 }\nsigma = { lower = 0 }\n'
        '[random]\nu = { distribution = "Normal", mu = 0, sigma = "sd_u", dims = "g" }\n'
        '[likelihood]\ny = { distribution = "Normal", mu = "b0 + b1 * x + u[g]", '
        'sigma = "sigma" }\n')
    with pytest.raises(NotAvailable, match=r"random effects \(u\).*Fit it in memory"):
        mle_ppl.fit(tmp_path / "re.toml", data=tmp_path, chunk_rows=50)


def _rows(check):
    return {r.quantity: r for r in check.rows}


# NIST StRD certified Longley coefficients (15 digits) and residual SD.
LONGLEY = np.array([-3482258.63459582, 15.0618722713733, -0.358191792925910e-01,
                    -2.02022980381683, -1.03322686717359, -0.511041056535807e-01,
                    1829.15146461355])


def test_streamed_least_squares_check_on_ill_conditioned_longley(tmp_path):
    """The chunked least-squares check (per-chunk QR, TSQR on the driver) on Longley (cond(X)
    ~1e9 before scaling) in 3-row chunks over 2 files agrees with the in-memory check and with
    NIST's certified values to the in-memory check's own tolerance (rtol 1e-8: an SVD/QR on the
    equilibrated design loses ~cond·eps); measured: 5e-12 relative to the in-memory one."""
    # the bundled data ship as the package mle_ppl.models (its folder is models/ in a checkout)
    df = pd.read_csv(resources.files("mle_ppl.models") / "data" / "longley.csv")
    df.iloc[:7].to_parquet(tmp_path / "a.parquet")
    df.iloc[7:].to_parquet(tmp_path / "b.parquet")
    mem = mle_ppl.fit("linear_regression")
    st = mle_ppl.fit("linear_regression", data=tmp_path, chunk_rows=3)
    cm, cs = mem.closed_form(), st.closed_form()
    assert cs.applies and cs.agrees and cs.kind == "least_squares"
    assert "QR" in cs.reference
    rm, rs = _rows(cm), _rows(cs)
    assert list(rs) == list(rm)
    for q, r in rs.items():  # same identities, same tolerances (same SEs, same n)
        assert r.agrees
        assert r.tol == pytest.approx(rm[q].tol, rel=1e-8)
        # the two references agree far inside each row's tolerance (1e-4 of it: the MSE row's
        # two QR paths differ by ~2e-12 relative, ~cond(equilibrated X)·eps)
        assert abs(r.closed_form - rm[q].closed_form) <= 1e-4 * rm[q].tol
        assert r.closed_form == pytest.approx(rm[q].closed_form, rel=1e-8)
    np.testing.assert_allclose([rs[lab].closed_form for lab in st.labels[:7]], LONGLEY,
                               rtol=1e-8)
    assert cs.extras["n"] == 16
    assert cs.extras["s = sqrt(RSS/(n−p))"] == pytest.approx(304.854073561965, rel=1e-9)
    doc = st.to_dict()["closed_form"]
    assert doc["applies"] and doc["agrees"]
    assert [r["quantity"] for r in doc["rows"]] == list(rm)


def test_streamed_least_squares_check_with_factor_and_many_chunks(data):
    """A formula model with a categorical (levels missing from a file) over 9 chunks: the same
    rows and reference values as in memory (rel 1e-10: QR vs SVD on the full design, both
    backward stable on a well-conditioned design), and statsmodels' OLS."""
    import statsmodels.formula.api as smf

    root, df = data
    (root / "lin.toml").write_text('[model]\nname = "lin"\nformula = "x2 ~ x1 + C(grp)"\n'
                                   'family = "gaussian"\n')
    mem = mle_ppl.fit(root / "lin.toml", data=df)
    st = mle_ppl.fit(root / "lin.toml", data=str(root / "pq"), chunk_rows=350)
    cm, cs = mem.closed_form(), st.closed_form()
    assert cs.agrees and cm.agrees
    rm, rs = _rows(cm), _rows(cs)
    assert list(rs) == list(rm)
    for q, r in rs.items():
        assert r.closed_form == pytest.approx(rm[q].closed_form, rel=1e-10, abs=1e-13)
        assert r.tol == pytest.approx(rm[q].tol, rel=1e-8)
    ols = smf.ols("x2 ~ x1 + C(grp)", df).fit()
    coefs = [rs[lab].closed_form for lab in st.labels if lab in rs][: len(ols.params)]
    np.testing.assert_allclose(sorted(coefs), sorted(ols.params.to_numpy()), rtol=1e-9,
                               atol=1e-12)
    assert cs.extras["RSS"] == pytest.approx(ols.ssr, rel=1e-10)


@pytest.mark.parametrize("name", ["lg", "multinomial_logistic", "binomial_trials"])
def test_streamed_cross_entropy_check_equals_in_memory(data, tmp_path, name):
    """NLL = n·CE and the Newton reference from per-chunk sums (Bernoulli over 3 files with a
    level missing from one; categorical/softmax on iris; binomial with trials): the in-memory
    check's rows and reference values. Tolerance rel 1e-10: the same NumPy formulas summed in
    another order, and two Newton solutions of one concave problem (measured ~2e-14)."""
    if name == "lg":
        root, df = data
        model, source, rows = root / "lg.toml", str(root / "pq"), 700
    else:
        csv = {"multinomial_logistic": "iris.csv", "binomial_trials": "binomial_trials.csv"}
        df = pd.read_csv(resources.files("mle_ppl.models") / "data" / csv[name])
        half = len(df) // 2
        df.iloc[:half].to_parquet(tmp_path / "a.parquet")
        df.iloc[half:].to_parquet(tmp_path / "b.parquet")
        model, source, rows = name, tmp_path, 23
    mem = mle_ppl.fit(model, data=df)
    st = mle_ppl.fit(model, data=source, chunk_rows=rows)
    cm, cs = mem.closed_form(), st.closed_form()
    assert cs.applies and cs.agrees and cm.agrees and cs.kind == "cross_entropy"
    assert "summed over the chunks" in cs.reference and "converged" in cs.reference
    rm, rs = _rows(cm), _rows(cs)
    assert list(rs) == list(rm)
    for q, r in rs.items():
        assert r.closed_form == pytest.approx(rm[q].closed_form, rel=1e-10, abs=1e-13)
        assert r.tol == pytest.approx(rm[q].tol, rel=1e-8)
    doc = st.to_dict()["closed_form"]
    assert doc["applies"] and doc["agrees"] and doc["kind"] == "cross_entropy"


def test_chunked_cross_entropy_reference_does_not_depend_on_its_start(data):
    """The chunked reference starts at the fit's θ̂; started 0.5 away from it in every
    coefficient it must reach the same optimum as the in-memory reference (from θ = 0) to
    1e-10 relative, so a wrong θ̂ could not pass the check."""
    from mle_ppl._src.report.chunked_checks import SummedProblem, find_head
    from mle_ppl._src.report.reference import newton_reference

    root, df = data
    st = mle_ppl.fit(root / "lg.toml", data=str(root / "pq"), chunk_rows=700)
    x = np.asarray(st.x)
    status, head = st.likelihood.map_head(find_head, x)
    assert status == "ok" and head.family == "bernoulli" and head.link == "logit"
    prob = SummedProblem(st.likelihood, x, head)
    far = newton_reference(prob, start=x[list(head.cols)] + 0.5)
    assert far.converged and far.iterations >= 3 and prob.passes >= 4
    ref = {r.quantity: r.closed_form for r in mle_ppl.fit(root / "lg.toml", data=df)
           .closed_form().rows}
    np.testing.assert_allclose(far.theta, [ref[st.labels[i]] for i in head.cols], rtol=1e-10)


def test_dask_cross_entropy_check_equals_in_memory(data):
    dd = pytest.importorskip("dask.dataframe")  # the test extra installs it (mle-ppl[dask])
    root, df = data
    parts = [df.iloc[:1200], df.iloc[1200:1200], df.iloc[1200:]]
    ddf = dd.concat([dd.from_pandas(p, npartitions=1) for p in parts])
    cm = mle_ppl.fit(root / "lg.toml", data=df).closed_form()
    cs = mle_ppl.fit(root / "lg.toml", data=ddf).closed_form()
    assert cs.agrees and cs.kind == "cross_entropy"
    rm, rs = _rows(cm), _rows(cs)
    assert list(rs) == list(rm)
    for q, r in rs.items():  # as in the streamed test
        assert r.closed_form == pytest.approx(rm[q].closed_form, rel=1e-10, abs=1e-13)


def test_dask_least_squares_check_equals_in_memory(data):
    """The same per-chunk QR on Dask partitions (one empty): the in-memory check's numbers."""
    dd = pytest.importorskip("dask.dataframe")  # the test extra installs it (mle-ppl[dask])
    root, df = data
    (root / "lin2.toml").write_text('[model]\nname = "lin2"\nformula = "x2 ~ x1 + C(grp)"\n'
                                    'family = "gaussian"\n')
    parts = [df.iloc[:1200], df.iloc[1200:1200], df.iloc[1200:2000], df.iloc[2000:]]
    ddf = dd.concat([dd.from_pandas(p, npartitions=1) for p in parts])
    cm = mle_ppl.fit(root / "lin2.toml", data=df).closed_form()
    cs = mle_ppl.fit(root / "lin2.toml", data=ddf).closed_form()
    assert cs.agrees and "QR" in cs.reference
    rm, rs = _rows(cm), _rows(cs)
    assert list(rs) == list(rm)
    for q, r in rs.items():  # rel 1e-10: QR vs SVD on a well-conditioned design
        assert r.closed_form == pytest.approx(rm[q].closed_form, rel=1e-10, abs=1e-13)


def test_streamed_least_squares_check_memory_is_bounded(tmp_path):
    # A chunk's design comes from a forward-mode Jacobian (rows x parameters); a reverse-mode
    # per-row Jacobian would hold a rows x rows intermediate: on 4,000-row chunks >= 4000² x 8 B
    # = 128 MB. The peak of NumPy allocations (tracemalloc) during the check must stay under
    # 16 MB (the structure is detected once, on the first 256 rows: 256² x 8 B = 0.5 MB).
    import tracemalloc

    rng = np.random.default_rng(6)
    n = 8_000
    df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    df["y"] = 1 + df.x1 - df.x2 + rng.normal(size=n)
    df.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "l.toml").write_text('[model]\nname = "l"\nformula = "y ~ x1 + x2"\n'
                                     'family = "gaussian"\n')
    st = mle_ppl.fit(tmp_path / "l.toml", data=tmp_path, chunk_rows=4_000)
    tracemalloc.start()
    check = st.closed_form()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert check.agrees
    assert top < 16 * 2**20, top
    X = np.c_[np.ones(n), df.x1, df.x2]
    coef, rss, *_ = np.linalg.lstsq(X, df.y.to_numpy(), rcond=None)
    assert [r.quantity for r in check.rows[:3]] == list(st.labels[:3])
    np.testing.assert_allclose([r.closed_form for r in check.rows[:3]], coef, rtol=1e-10)
    assert check.extras["RSS"] == pytest.approx(float(rss[0]), rel=1e-10)


NUMERIC = """
[data]
y = "y"
x = ["x1", "x2", "b"]
[parameters]
a = {}
c = { dims = "x" }
[likelihood]
y = { distribution = "Poisson", mu = "exp(a + x @ c)" }
"""


def test_numeric_entries_bound_from_arrow_as_bind_does(tmp_path, monkeypatch):
    """Numeric [data] entries are bound straight from Arrow (float, int32 and bool columns; the
    counts int64 in one file, whole-number floats in the other): every chunk equals bind's
    result exactly, the fit equals the in-memory one (read-ahead on and off), and a bad value in
    a later chunk gets bind's message naming the file and rows."""
    import threading

    from mle_ppl._src.model.arrow_bind import same_binding
    from mle_ppl._src.model.chunks import ParquetChunks, bind_chunk

    rng = np.random.default_rng(8)
    n = 1000
    df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.integers(-3, 4, n).astype(np.int32),
                       "b": rng.random(n) < 0.4})
    df["y"] = rng.poisson(np.exp(0.3 + 0.4 * df.x1 - 0.1 * df.x2 + 0.5 * df.b))
    df.iloc[:600].to_parquet(tmp_path / "a.parquet")
    df.iloc[600:].astype({"y": float}).to_parquet(tmp_path / "b.parquet")
    spec = mle_ppl.loads_model(NUMERIC, name="num")
    src = ParquetChunks(tmp_path, spec, 90)
    assert src._binder is not None
    for k, (label, batch) in enumerate(src.batches()):
        fast = src._binder.bind(batch, k % src._binder.slots)
        assert same_binding(fast, bind_chunk(spec, batch.to_pandas(), src.levels, label).bound)
    mem = mle_ppl.fit(spec, data=df)
    _same(mle_ppl.fit(spec, data=tmp_path, chunk_rows=90), mem)
    monkeypatch.setenv("MLE_PPL_PREFETCH", "0")
    _same(mle_ppl.fit(spec, data=tmp_path, chunk_rows=90), mem)
    monkeypatch.setenv("MLE_PPL_PREFETCH", "one")
    with pytest.raises(mle_ppl.MLEError, match="MLE_PPL_PREFETCH='one'"):
        mle_ppl.fit(spec, data=tmp_path, chunk_rows=90)
    monkeypatch.delenv("MLE_PPL_PREFETCH")
    # an early stop (an error, or a caller that stops reading) ends the read-ahead thread
    gen = ParquetChunks(tmp_path, spec, 90).chunks()
    next(gen)
    gen.close()
    assert not any(t.name == "mle-ppl-prefetch" for t in threading.enumerate())
    bad = df.iloc[600:].astype({"y": float})
    bad.iloc[[157], bad.columns.get_loc("x1")] = np.nan
    bad.to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet' rows 90-179.*'x1' has 1 missing.*\[67\]"):
        mle_ppl.fit(spec, data=tmp_path, chunk_rows=90)
    bad = df.iloc[600:].astype({"y": float})
    bad.iloc[[95], bad.columns.get_loc("y")] = 2.5
    bad.to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet' rows 90-179.*'y'.*non-integer.*\[5\]"):
        mle_ppl.fit(spec, data=tmp_path, chunk_rows=90)


RSS_SCRIPT = r"""
import glob, json, sys
import pandas as pd
import mle_ppl
def status(key):  # kB from /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
small, big, model, how = sys.argv[1:5]
spec = mle_ppl.loads_model(model, name="m")
mle_ppl.fit(spec, data=pd.read_parquet(glob.glob(small + "/*")[0]))  # compile, warm up
mle_ppl.fit(spec, data=small, chunk_rows=20_000)
if how == "warmup":  # fills the on-disk compile caches only
    sys.exit(0)
# reset the peak (VmHWM) to the current RSS, so the warm-up's own peak cannot hide the fit's
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
base = status("VmRSS")
if how == "streamed":
    fit = mle_ppl.fit(spec, data=big, chunk_rows=20_000)
else:
    fit = mle_ppl.fit(spec, data=pd.concat([pd.read_parquet(f)
                                            for f in sorted(glob.glob(big + "/*"))]))
print(status("VmHWM") - base, fit.converged, json.dumps(fit.theta.tolist()))
"""


@pytest.mark.slow
def test_streamed_peak_rss_is_bounded_by_the_chunk_in_a_subprocess(tmp_path):
    """Peak resident memory (VmHWM, reset after warm-up fits: also Arrow's and the compiled
    functions' memory) that a fit adds in a fresh process: streamed in 20,000-row chunks,
    1.2e6 rows x 4 columns (38 MB as float64) must add under a quarter of what the in-memory
    fit of the same files adds (the issue's target; a chunk is 1/60 of the data), with the same
    estimates (1e-10 relative: sums in another order)."""
    rng = np.random.default_rng(9)
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    n = 300_000
    for i in range(4):
        X = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-X @ [0.5, -0.3, 0.2]))).astype(np.int8)
        df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "x3": X[:, 2], "y": y})
        df.to_parquet(big / f"p{i}.parquet", row_group_size=50_000)
        if i == 0:
            df.iloc[:40_000].to_parquet(small / "p.parquet", row_group_size=50_000)
    model = ('[data]\ny = "y"\nx = ["x1", "x2", "x3"]\n[parameters]\na = {}\n'
             'b = { dims = "x" }\n[likelihood]\n'
             'y = { distribution = "Bernoulli", logit_p = "a + x @ b" }\n')
    grown, theta = {}, {}
    # a first process fills the on-disk compile caches: on a fresh install the Numba/LLVM
    # compile peaks above the in-memory fit (2 GB+ in CI) and would hide what the fits add
    for how in ("warmup", "memory", "streamed"):
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(small), str(big), model, how],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        if how == "warmup":
            continue
        added, converged, values = out.stdout.strip().split(" ", 2)
        assert converged == "True"
        grown[how], theta[how] = int(added), np.array(json.loads(values))
    np.testing.assert_allclose(theta["streamed"], theta["memory"], rtol=1e-10)
    assert grown["memory"] > 38e6  # the data once, at least
    assert grown["streamed"] < 0.25 * grown["memory"], grown
