"""Poisson bootstrap: weights independent of chunking, replicates equal to weighted MLEs (closed
form), SEs equal to the ordinary bootstrap's and Wald's within Monte-Carlo error, and the same
replicates in memory, streamed and on Dask."""

import sys
from pathlib import Path

import numpy as np
import pymc as pm
import pytest

import mle_ppl
from mle_ppl._src.errors import MLEError
from mle_ppl._src.inference.bootstrap import poisson_weights, replicate_key

sys.path.insert(0, str(Path(__file__).parent))
from test_bigdata import FORMULA, _frame  # noqa: E402

Y = np.random.default_rng(5).exponential(2.0, size=200)


@pytest.fixture(scope="module")
def normal_fit():
    with pm.Model() as m:
        mu = pm.Flat("mu")
        s = pm.HalfFlat("s")
        pm.Normal("y", mu, s, observed=Y)
    return mle_ppl.fit(m)


def test_weights_do_not_depend_on_chunking_and_are_poisson():
    key = replicate_key(np.random.SeedSequence(11).spawn(3)[2])
    whole = poisson_weights(key, 0, 10_007)
    for cuts in ([0, 1, 5, 4096, 10_007], [0, 3, 7, 8, 9999, 10_007]):
        parts = [poisson_weights(key, a, b - a) for a, b in zip(cuts[:-1], cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    # Poisson(1): mean 1, variance 1, P(0) = 1/e. On n = 200_000 draws the standard errors are
    # 1/sqrt(n) = 0.0022 (mean), sqrt(2/n) = 0.0032 (variance), 0.0011 (P(0)); 5 of them allowed
    w = poisson_weights(key, 123, 200_000)
    assert abs(w.mean() - 1) < 5 * 0.0022
    assert abs(w.var() - 1) < 5 * 0.0032
    assert abs(np.mean(w == 0) - np.exp(-1)) < 5 * 0.0011
    other = poisson_weights(replicate_key(np.random.SeedSequence(12)), 123, 200_000)
    assert abs(np.corrcoef(w, other)[0, 1]) < 5 / np.sqrt(200_000)  # different seeds: independent


def test_replicates_are_weighted_mles_and_ses_agree(normal_fit):
    B = 1000
    boot = normal_fit.bootstrap(B, kind="poisson", random_seed=1)
    assert boot.kind == "poisson" and boot.n_failed == 0
    for b in range(0, B, 97):
        w = poisson_weights(replicate_key(boot.seeds[b]), 0, Y.size)
        m = np.sum(w * Y) / w.sum()  # the weighted Normal MLE: weighted mean and (1/sum w) sd
        s = np.sqrt(np.sum(w * (Y - m) ** 2) / w.sum())
        np.testing.assert_allclose(boot.replicates[b], [m, s], rtol=1e-8)  # Newton to 1e-10
    ordinary = normal_fit.bootstrap(B, random_seed=2)
    # An SD from B replicates has relative Monte-Carlo error ~ sqrt((kurtosis - 1) / (4 B)),
    # ~0.025 here (kurtosis of the replicates ~3.5); the difference of two independent ones
    # ~0.035 and against Wald ~0.025; 4 of them allowed (the Poisson and multinomial bootstraps
    # differ by O(1/n) = 0.005 beyond that).
    rel = boot.std_errors / ordinary.std_errors - 1
    assert np.all(np.abs(rel) < 4 * 0.035), rel
    wald = normal_fit.std_errors["mu"]  # s / sqrt(n): right for the mean whatever the data
    assert abs(boot.std_errors["mu"] / wald - 1) < 4 * 0.025
    # influence-based BCa works in memory
    assert np.all(np.isfinite(boot.conf_int(method="bca").to_numpy()))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("pboot")
    df = _frame()
    (root / "pq").mkdir()
    for i, (a, b) in enumerate([(0, 1200), (1200, 2000), (2000, 3000)]):
        df.iloc[a:b].to_parquet(root / "pq" / f"part{i}.parquet", row_group_size=300)
    (root / "lg.toml").write_text(FORMULA)
    mem = mle_ppl.fit(root / "lg.toml", data=df)
    return root, df, mem, mem.bootstrap(6, kind="poisson", random_seed=3)


@pytest.mark.parametrize("chunk_rows", [700, 1000])
def test_streamed_replicates_equal_in_memory(big, chunk_rows):
    root, df, mem, ref = big
    st = mle_ppl.fit(root / "lg.toml", data=str(root / "pq"), chunk_rows=chunk_rows)
    boot = st.bootstrap(6, kind="poisson", random_seed=3)
    assert boot.converged.all() and ref.converged.all()
    # same weights, same Newton from the same MLE: only the summation order differs
    se = mem.std_errors.to_numpy()
    assert np.max(np.abs(boot.replicates - ref.replicates) / se) < 1e-8
    with pytest.raises(MLEError, match="BCa intervals need each row's influence"):
        boot.conf_int(method="bca")
    assert np.all(np.isfinite(boot.conf_int().to_numpy()))
    with pytest.raises(MLEError, match="n_jobs=2"):
        st.bootstrap(3, kind="poisson", n_jobs=2)


def test_dask_replicates_equal_in_memory(big):
    dd = pytest.importorskip("dask.dataframe")  # the test extra installs it (mle-ppl[dask])
    root, df, mem, ref = big
    parts = [df.iloc[:1200], df.iloc[1200:1200], df.iloc[1200:2000], df.iloc[2000:]]
    ddf = dd.concat([dd.from_pandas(p, npartitions=1) for p in parts])  # one empty partition
    boot = mle_ppl.fit(root / "lg.toml", data=ddf).bootstrap(6, kind="poisson", random_seed=3)
    se = mem.std_errors.to_numpy()
    assert np.max(np.abs(boot.replicates - ref.replicates) / se) < 1e-8


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  silence_logs=logging.ERROR, dashboard_address=":0") as lc, \
            distributed.Client(lc) as client:
        yield client


@pytest.mark.slow
def test_local_cluster_replicates_equal_in_memory(big, cluster):
    """Worker processes: the per-chunk function pickles, each worker compiles the weighted
    objective, and the partitions' row offsets give the in-memory weights."""
    dd = pytest.importorskip("dask.dataframe")
    root, df, mem, ref = big
    fit = mle_ppl.fit(root / "lg.toml", data=dd.from_pandas(df, npartitions=5))
    assert fit.source.reading["scheduler"] == cluster.scheduler.address
    boot = fit.bootstrap(6, kind="poisson", random_seed=3)
    se = mem.std_errors.to_numpy()
    assert np.max(np.abs(boot.replicates - ref.replicates) / se) < 1e-8
