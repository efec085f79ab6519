"""The Laplace objective compiles each of its functions once per model (issue 14, performance).

No timing here: compilations are counted. A fit compiles a fixed small set of functions (none
inside the outer or inner loop); a refit, the Hessian, profile intervals and the random-effects
report compile nothing more; a second model of the same structure and shapes, built in the same
process from other data, finds every function in the on-disk cache (its keys depend on the
graph, not on the data or on the Python objects).
"""

import numpy as np
import pymc as pm
import pytest

import mle_ppl
from mle_ppl._src.engine import diskcache
from mle_ppl._src.engine import laplace_graph as lg


def _model(seed, G=12, n=120):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    y = 1.0 + rng.normal(0, 0.7, G)[g] + rng.normal(0, 1.0, n)
    with pm.Model(coords={"group": np.arange(G)}) as m:
        a = pm.Flat("a")
        sd_u = pm.HalfFlat("sd_u")
        s = pm.HalfFlat("sigma")
        u = pm.Normal("u", 0, sd_u, dims="group")
        pm.Normal("y", a + u[g], s, observed=y)
    return m


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Every compilation of the Laplace graphs (by what it computes), and every cache hit."""
    monkeypatch.setenv("MLE_PPL_CACHE_DIR", str(tmp_path))
    log = {"compiled": [], "hits": 0}
    compile_, load = lg._compile, diskcache.load

    def compile_counted(inputs, outputs, mode, *, model=None):
        log["compiled"].append(tuple(getattr(v, "name", None) for v in inputs))
        return compile_(inputs, outputs, mode, model=model)

    def load_counted(key):
        fn = load(key)
        log["hits"] += fn is not None
        return fn

    monkeypatch.setattr(lg, "_compile", compile_counted)
    monkeypatch.setattr(diskcache, "load", load_counted)
    return log


def test_a_fit_compiles_each_function_once_and_nothing_after(counted):
    m = _model(1)
    fit = mle_ppl.fit(m)
    assert fit.converged and not fit.warnings
    first = list(counted["compiled"])
    # value+gradient+Hessian product, the log-det's third-order product, the per-term rows (with
    # the user-scale values): three functions, each compiled once
    assert len(first) == 3 and len(set(first)) == 3
    fit.conf_int(method="profile")  # profile likelihood: many constrained sub-fits
    mle_ppl.fit(m)  # a refit of the same model
    assert fit.random_effects is not None and len(fit.random_effects.mode) == 12
    assert counted["compiled"] == first


def test_same_structure_hits_the_disk_cache(counted):
    mle_ppl.fit(_model(2))
    n = len(counted["compiled"])
    assert counted["hits"] == 0  # a fresh cache directory
    fit = mle_ppl.fit(_model(3))  # another pm.Model, other data, same shapes
    assert fit.converged
    assert len(counted["compiled"]) == 2 * n
    assert counted["hits"] == n  # every function of the second model came from the cache
