"""The on-disk cache of compiled functions: hits skip compiling, a changed graph is a new entry, a
corrupt entry is rebuilt, concurrent writers never leave a broken entry, the size bound holds and
the off switch works."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytensor.tensor as pt
import pytest

from mle_ppl._src.engine import diskcache
from mle_ppl._src.engine.likelihood import SMALL_MODE, _compile


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLE_PPL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLE_PPL_CACHE", raising=False)
    return tmp_path


def _entries(path):
    return sorted(p for p in path.iterdir() if p.suffix == ".pkl")


def _graph(power=2.0):
    x = pt.vector("x")
    data = pt.as_tensor(np.arange(100.0))  # large constant: lifted to an input
    return x, pt.sum((data - x[0]) ** power)


def test_second_compile_is_a_hit_and_gives_the_same_numbers(cache, monkeypatch):
    x, out = _graph()
    f1 = _compile([x], out, SMALL_MODE)
    assert len(_entries(cache)) == 1
    calls = []
    real = diskcache.load
    monkeypatch.setattr(diskcache, "load", lambda key: calls.append(real(key)) or calls[-1])
    f2 = _compile([x], out, SMALL_MODE)
    assert calls and calls[0] is not None  # served from disk
    # reference: the sum of squares by NumPy
    ref = np.sum((np.arange(100.0) - 1.5) ** 2)
    assert float(f1(np.array([1.5]))) == pytest.approx(ref, rel=1e-14)
    assert float(f2(np.array([1.5]))) == pytest.approx(ref, rel=1e-14)


def test_changed_graph_or_data_type_is_a_new_entry(cache):
    x, out = _graph(2.0)
    _compile([x], out, SMALL_MODE)
    x3, out3 = _graph(3.0)
    f3 = _compile([x3], out3, SMALL_MODE)
    assert len(_entries(cache)) == 2
    assert float(f3(np.array([0.0]))) == pytest.approx(np.sum(np.arange(100.0) ** 3), rel=1e-14)
    xi = pt.vector("x")
    out_int = pt.sum((pt.as_tensor(np.arange(100)) - xi[0]) ** 2.0)  # int64 data: another key
    _compile([xi], out_int, SMALL_MODE)
    assert len(_entries(cache)) == 3
    # the same graph under another mode is another entry too
    _compile([x], out, "FAST_COMPILE")
    assert len(_entries(cache)) == 4


def test_same_structure_other_data_values_share_an_entry(cache):
    # data are inputs: two constants of the same dtype and rank give one compiled graph
    xa = pt.vector("x")
    fa = _compile([xa], pt.sum(pt.as_tensor(np.arange(100.0)) * xa[0]), SMALL_MODE)
    xb = pt.vector("x")
    fb = _compile([xb], pt.sum(pt.as_tensor(np.ones(500)) * xb[0]), SMALL_MODE)
    assert len(_entries(cache)) == 1
    assert float(fa(np.array([2.0]))) == pytest.approx(2 * 4950.0, rel=1e-14)
    assert float(fb(np.array([2.0]))) == pytest.approx(1000.0, rel=1e-14)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_key"])
def test_corrupt_entry_is_removed_and_rebuilt(cache, damage):
    x, out = _graph()
    _compile([x], out, SMALL_MODE)
    (entry,) = _entries(cache)
    raw = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"not a pickle at all")
    elif damage == "truncated":
        entry.write_bytes(raw[: len(raw) // 2])
    else:
        magic, _, fn = pickle.loads(raw)
        entry.write_bytes(pickle.dumps((magic, "0" * 64, fn)))
    f = _compile([x], out, SMALL_MODE)
    assert float(f(np.array([0.0]))) == pytest.approx(np.sum(np.arange(100.0) ** 2), rel=1e-14)
    (rebuilt,) = _entries(cache)
    assert pickle.loads(rebuilt.read_bytes())[1] == entry.stem  # a valid entry again


def test_off_switch(cache, monkeypatch):
    monkeypatch.setenv("MLE_PPL_CACHE", "0")
    assert diskcache.cache_dir() is None
    x, out = _graph()
    f = _compile([x], out, SMALL_MODE)
    assert float(f(np.array([0.0]))) == pytest.approx(np.sum(np.arange(100.0) ** 2), rel=1e-14)
    assert list(cache.iterdir()) == []


def test_default_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("MLE_PPL_CACHE_DIR", raising=False)
    monkeypatch.delenv("MLE_PPL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert diskcache.cache_dir() == tmp_path / "mle-ppl" / "functions"


def test_size_bound_drops_least_recently_used(tmp_path):
    for i in range(10):
        p = tmp_path / f"{i:064x}.pkl"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (1000 + i, 1000 + i))
    (tmp_path / ".tmp-stale.pkl").write_bytes(b"x")
    os.utime(tmp_path / ".tmp-stale.pkl", (0, 0))
    diskcache.prune(tmp_path, max_bytes=5000)
    left = sorted(p.name for p in tmp_path.iterdir())
    # 10 kB > 5 kB: down to 80 % of the bound (4 entries), the newest kept, stale temp removed
    assert left == [f"{i:064x}.pkl" for i in range(6, 10)]


def test_uncacheable_op_is_compiled_but_not_stored(cache):
    from pytensor import wrap_py

    @wrap_py(itypes=[pt.dvector], otypes=[pt.dvector])
    def double(v):
        return 2 * v

    x = pt.vector("x", dtype="float64")
    f = _compile([x], double(x), SMALL_MODE)
    np.testing.assert_array_equal(f(np.array([1.0, 2.0])), [2.0, 4.0])
    assert _entries(cache) == []


WRITER = textwrap.dedent("""
    import sys, numpy as np, pytensor.tensor as pt
    from mle_ppl._src.engine.likelihood import SMALL_MODE, _compile
    x = pt.vector("x")
    f = _compile([x], pt.sum((pt.as_tensor(np.arange(100.0)) - x[0]) ** 2.0), SMALL_MODE)
    print(float(f(np.array([1.0]))))
""")


def test_concurrent_writers_leave_one_valid_entry(cache):
    env = dict(os.environ, MLE_PPL_CACHE_DIR=str(cache),
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    ref = np.sum((np.arange(100.0) - 1.0) ** 2)
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert float(out) == pytest.approx(ref, rel=1e-14)
    entries = _entries(cache)
    assert len(entries) == 1
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
    magic, key, fn = pickle.loads(entries[0].read_bytes())
    assert key == entries[0].stem
