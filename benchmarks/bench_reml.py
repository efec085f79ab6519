"""REML against ML on the same mixed model, and against statsmodels MixedLM(reml=True), one run.

The bundled ``linear_mixed`` model (180 rows, 18 subjects, correlated intercept and slope) and a
random-intercept LMM (n rows, G groups): median wall time of ``mle_ppl.fit(..., reml=False)``,
``mle_ppl.fit(..., reml=True)`` (each compiled once beforehand) and statsmodels
``MixedLM(reml=True).fit(method="bfgs", gtol=1e-10)``, round-robin; the REML log-likelihoods
must agree to 1e-6.

    python benchmarks/bench_reml.py [--n 2000] [--groups 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import statsmodels.formula.api as smf
from bench_mixed import lmm_case
from statsmodels.tools.sm_exceptions import ConvergenceWarning

import mle_ppl


def _timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def run(name, model, md, repeats):
    mle_ppl.fit(model)  # compile both objectives outside the timings
    mle_ppl.fit(model, reml=True)
    times = {"ml": [], "reml": [], "statsmodels_reml": []}
    for _ in range(repeats):
        t, _ = _timed(lambda: mle_ppl.fit(model))
        times["ml"].append(t)
        t, fit = _timed(lambda: mle_ppl.fit(model, reml=True))
        times["reml"].append(t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t, ref = _timed(lambda: md.fit(reml=True, method="bfgs", gtol=1e-10))
        times["statsmodels_reml"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"case": name, "median_s": med, "reml_over_ml": med["reml"] / med["ml"],
           "reml_over_statsmodels": med["reml"] / med["statsmodels_reml"],
           "loglik_rel_diff": abs(fit.loglik / ref.llf - 1)}
    assert out["loglik_rel_diff"] < 1e-6, out
    print(json.dumps(out))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spec = mle_ppl.load_model("linear_mixed")
    df = spec.default_data()
    model, _ = spec.model_for(df)
    md = smf.mixedlm("reaction ~ days", df, groups=df["subject"], re_formula="~days")
    run("linear_mixed", model, md, args.repeats)
    model, df = lmm_case(args.n, args.groups)
    md = smf.mixedlm("y ~ x", df, groups=df["g"])
    run(f"random_intercept_{args.n}x{args.groups}", model, md, args.repeats)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
