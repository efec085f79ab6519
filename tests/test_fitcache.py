"""The fit cache (engine/fitcache.py): a TOML model fitted in a new process from the cache gives the
same numbers to the last digit as without any cache, without importing PyMC; any change of the file,
the data's schema or the options is another key; a corrupt entry is ignored and rebuilt; concurrent
processes are safe.

A hit needs a process where PyMC is not imported, so those tests run fresh interpreters.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mle_ppl._src.engine import fitcache
from mle_ppl._src.model.library import bundled_models, load_model, toml_file

#: One fit in a fresh process: what PyMC's import state was after it, which objective ran, and
#: every number of the result (repr: exact), the JSON document and the printed summary.
SCRIPT = r"""
import json, sys
from mle_ppl._src.api.fit import fit
model, data = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
r = fit(model, data, warn=False)
out = {"pymc_after_fit": "pymc" in sys.modules, "objective": type(r.likelihood).__name__,
       "numbers": [repr(float(v)) for v in (*r.theta, *r.x, *r.cov_array.ravel(), r.loglik,
                                            r.grad_norm, r.hessian_min_eig)],
       "counts": [r.n_obs, r.iterations, r.n_evals], "labels": list(r.labels),
       "coords": {k: [str(v) for v in vals] for k, vals in r.source.coords.items()},
       "summary": str(r)}
out["doc"] = r.to_dict()  # the closed-form check builds the PyMC model: after the record above
out["hc0"] = [repr(float(v)) for v in r.robust_cov("HC0").to_numpy().ravel()]
print(json.dumps(out))
"""


def _fit(model, cache_dir, data=None, cwd=None, **env_extra):
    env = dict(os.environ, MLE_PPL_CACHE_DIR=str(cache_dir))
    env.pop("MLE_PPL_CACHE", None)
    env.update(env_extra)
    args = [sys.executable, "-c", SCRIPT, str(model)] + ([str(data)] if data else [])
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same(a, b):
    for key in ("numbers", "counts", "labels", "coords", "summary", "doc", "hc0"):
        assert a[key] == b[key], key


def _fit_entries(path):
    return sorted(p for p in path.iterdir() if p.name.startswith("fit-"))


@pytest.mark.parametrize("model", [
    "logistic_regression",  # Bernoulli: PyMC's parameter check op in the graph (stand-in)
    pytest.param("linear_regression", marks=pytest.mark.slow),  # log sigma: transform, Jacobian
    pytest.param("negative_binomial", marks=pytest.mark.slow),  # formula with C(group)
    # softmax: PyTensor cannot pickle its compiled functions; the cache notes it, and every run
    # takes the normal path
    pytest.param("multinomial_logistic", marks=pytest.mark.slow),
])
def test_hit_gives_the_normal_fit_to_the_last_digit_without_pymc(model, tmp_path):
    miss = _fit(model, tmp_path / "cache")
    hit = _fit(model, tmp_path / "cache")
    off = _fit(model, tmp_path / "unused", MLE_PPL_CACHE="0")
    assert miss["objective"] == off["objective"] == "Likelihood"
    if model == "multinomial_logistic":
        assert hit["objective"] == "Likelihood" and len(_fit_entries(tmp_path / "cache")) == 1
    else:
        assert hit["objective"] == "CachedLikelihood"
        assert miss["pymc_after_fit"] and not hit["pymc_after_fit"]
    _same(hit, off)  # exact: numbers as repr, the JSON document, the summary text
    _same(miss, off)
    assert hit["doc"]["converged"] and hit["doc"]["closed_form"]


@pytest.mark.slow
def test_changed_file_data_or_corrupt_entry_take_the_normal_path(tmp_path):
    src = bundled_models()["logistic_regression"]
    work = tmp_path / "m"
    work.mkdir()
    shutil.copy(src, work / "model.toml")
    (work / "data").mkdir()
    shutil.copy(src.parent / "data" / "logistic_regression.csv", work / "data")
    cache = tmp_path / "cache"
    first = _fit(work / "model.toml", cache)
    assert _fit(work / "model.toml", cache)["objective"] == "CachedLikelihood"
    # the same file by a relative path from another directory: a hit, its default data found
    rel = _fit("m/model.toml", cache, cwd=tmp_path)
    assert rel["objective"] == "CachedLikelihood" and rel["numbers"] == first["numbers"]
    # the file's bytes change (a comment): another key, the normal path, the same numbers
    (work / "model.toml").write_text((work / "model.toml").read_text() + "\n# edited\n")
    edited = _fit(work / "model.toml", cache)
    assert edited["objective"] == "Likelihood"
    assert edited["numbers"] == first["numbers"]
    # more rows: another key (the number of rows is part of it)
    table = pd.read_csv(work / "data" / "logistic_regression.csv")
    pd.concat([table, table.iloc[:10]]).to_csv(tmp_path / "more.csv", index=False)
    more = _fit(work / "model.toml", cache, tmp_path / "more.csv")
    assert more["objective"] == "Likelihood" and more["counts"][0] == len(table) + 10
    # a corrupt entry is ignored (the normal path runs and writes it again)
    for entry in _fit_entries(cache):
        entry.write_bytes(b"not a pickle")
    again = _fit(work / "model.toml", cache)
    assert again["objective"] == "Likelihood" and again["numbers"] == edited["numbers"]
    assert _fit(work / "model.toml", cache)["objective"] == "CachedLikelihood"


@pytest.mark.slow
def test_concurrent_processes_share_the_cache(tmp_path):
    env = dict(os.environ, MLE_PPL_CACHE_DIR=str(tmp_path))
    env.pop("MLE_PPL_CACHE", None)
    cmd = [sys.executable, "-m", "mle_ppl", "fit", "logistic_regression", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    assert len({o for o, _ in outs}) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    hit = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert hit.stdout == outs[0][0]
    assert _fit("logistic_regression", tmp_path)["objective"] == "CachedLikelihood"


# ----------------------------------------------------------------------------- in-process
def test_fit_key_changes_with_schema_rows_and_options():
    spec = load_model("logistic_regression")
    b = spec.bind(spec.default_data())
    table = b.table
    skey = fitcache.spec_key(spec.path, spec.path.read_bytes())

    def key(bound, **kw):
        opts = {"likelihood_only": False, "mode": "auto", "random": None} | kw
        return fitcache.fit_key(skey, bound, **opts)

    k0 = key(b)
    assert key(spec.bind(table.copy())) == k0  # other values, same schema: the same entry
    changed = table.copy()
    changed["x1"] = changed["x1"] * 2.0
    assert key(spec.bind(changed)) == k0
    assert key(spec.bind(table.iloc[:-1])) != k0  # rows
    assert key(b, likelihood_only=True) != k0
    assert key(b, mode="FAST_RUN") != k0
    assert key(b, random=[]) != k0
    other = fitcache.spec_key(spec.path, spec.path.read_bytes() + b"\n")
    assert fitcache.fit_key(other, b, likelihood_only=False, mode="auto", random=None) != k0
    # categorical levels are part of the schema
    spec_c = load_model("multinomial_logistic")
    tab = spec_c.default_data()
    k_c = fitcache.fit_key(skey, spec_c.bind(tab), likelihood_only=False, mode="auto",
                           random=None)
    ints = tab.assign(sepal_length=np.round(tab["sepal_length"]))
    assert fitcache.fit_key(skey, spec_c.bind(ints), likelihood_only=False, mode="auto",
                            random=None) == k_c  # values only
    assert spec_c.bind(tab).structure != spec.bind(table).structure


def test_toml_file_is_the_file_load_model_reads(tmp_path):
    for name, path in bundled_models().items():
        found = toml_file(name)
        if path.suffix == ".toml":
            assert found == path == load_model(name).path
        else:
            assert found is None  # Python model files: the normal path
    assert toml_file(tmp_path / "missing.toml") is None
    assert toml_file(object()) is None


def test_standin_check_op_behaves_like_pymcs():
    """The stand-in used while PyMC is not imported: same properties, text and exceptions."""
    import pytensor
    import pytensor.tensor as pt
    from pymc.logprob.utils import CheckParameterValue

    standin = fitcache.standins()[("pymc.logprob.utils", "CheckParameterValue")]
    x = pt.dscalar("x")
    outs = []
    for cls in (CheckParameterValue, standin):
        op = cls("sigma > 0", can_be_replaced_by_ninf=True)
        assert str(op) == "Check{sigma > 0}"
        assert op.__props__ == CheckParameterValue.__props__
        f = pytensor.function([x], op(2.0 * x, pt.gt(x, 0)), mode="FAST_COMPILE")
        outs.append(float(f(1.5)))
        with pytest.raises(ValueError, match="sigma > 0") as info:
            f(-1.0)
        assert type(info.value).__name__ == "ParameterValueError"
    assert outs == [3.0, 3.0]


def test_installed_versions_are_importlib_metadatas():
    from importlib.metadata import version

    found = fitcache.installed()
    for dist in fitcache._VERSIONED:
        assert found[dist] == version(dist), dist


def test_predictor_memory_is_what_forget_resets():
    """The fit cache stores a PredictorEval without its memory (attributes _last*, _kept*) and
    restores it with forget(): that must be all of it, as a new evaluator has it."""
    import pickle

    from mle_ppl._src.engine.likelihood import Likelihood

    spec = load_model("logistic_regression")
    model, _ = spec.model_for(spec.default_data())
    ev = Likelihood(model)._predictors
    assert ev is not None
    fresh = pickle.dumps({k: v for k, v in vars(ev).items() if k.startswith(("_last", "_kept"))})
    ev.value_and_grad(np.zeros(ev.n_params))
    ev.hessian(np.full(ev.n_params, 0.1))
    ev.forget()
    after = {k: v for k, v in vars(ev).items() if k.startswith(("_last", "_kept"))}
    assert pickle.dumps(after) == fresh
