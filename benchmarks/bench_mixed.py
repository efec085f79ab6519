"""Mixed models: mle-ppl's Laplace-marginal fit against statsmodels MixedLM, same run, same data.

Cases (issue 14):
- ``lmm``: random-intercept LMM, n rows, G groups: median wall time of ``mle_ppl.fit`` (compiled
  once beforehand; a refit re-uses the compiled functions) and of ``MixedLM(reml=False).fit``
  (``method="bfgs", gtol=1e-10``, its tight setting; the loglik must agree to 1e-6), round-robin.
- ``poisson``: Poisson GLMM, n rows, G groups, 5 fixed effects: time, outer iterations, time per
  outer iteration and peak RSS of the process.

    python benchmarks/bench_mixed.py [--n 100000] [--groups 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import pandas as pd
import pymc as pm


def lmm_case(n, G, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, G)[g] + rng.normal(0, 1.0, n)
    with pm.Model(coords={"group": np.arange(G)}) as m:
        a, b = pm.Flat("a"), pm.Flat("b")
        sd_u, s = pm.HalfFlat("sd_u"), pm.HalfFlat("sigma")
        u = pm.Normal("u", 0, sd_u, dims="group")
        pm.Normal("y", a + b * pm.Data("x", x) + u[pm.Data("g", g)], s, observed=y)
    return m, pd.DataFrame({"y": y, "x": x, "g": g})


def poisson_case(n, G, k=5, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    X = rng.normal(size=(n, k - 1)) * 0.3
    beta = rng.normal(0, 0.3, k - 1)
    y = rng.poisson(np.exp(0.5 + X @ beta + rng.normal(0, 0.5, G)[g]))
    with pm.Model(coords={"group": np.arange(G)}) as m:
        a = pm.Flat("a")
        b = pm.Flat("b", shape=k - 1)
        sd_u = pm.HalfFlat("sd_u")
        u = pm.Normal("u", 0, sd_u, dims="group")
        pm.Poisson("y", pm.math.exp(a + pm.Data("X", X) @ b + u[pm.Data("g", g)]), observed=y)
    return m


def main(argv=None):
    import statsmodels.formula.api as smf

    import mle_ppl

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--poisson-groups", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    m, df = lmm_case(args.n, args.groups)
    t = time.perf_counter()
    first = mle_ppl.fit(m)
    compile_and_fit = time.perf_counter() - t
    ours, theirs = [], []
    ref = None
    for _ in range(args.repeats):  # round-robin
        t = time.perf_counter()
        fit = mle_ppl.fit(m)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = smf.mixedlm("y ~ x", df, groups=df["g"]).fit(reml=False, method="bfgs", gtol=1e-10)
        theirs.append(time.perf_counter() - t)
    rel = abs(fit.loglik - ref.llf) / abs(ref.llf)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"LMM n={args.n} G={args.groups}: mle-ppl {mo:.3f} s (first fit incl. compile "
          f"{compile_and_fit:.1f} s), statsmodels MixedLM {mt:.3f} s, ratio {mo / mt:.2f}; "
          f"loglik {fit.loglik:.10g} vs {ref.llf:.10g} (rel. diff {rel:.1e}); "
          f"first fit loglik {first.loglik:.10g}")

    pm_model = poisson_case(args.n, args.poisson_groups)
    t = time.perf_counter()
    fit = mle_ppl.fit(pm_model)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    fit = mle_ppl.fit(pm_model)
    t2 = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Poisson GLMM n={args.n} G={args.poisson_groups} p=5: first fit (incl. compile) "
          f"{t1:.1f} s, refit {t2:.2f} s, {fit.iterations} outer iterations "
          f"({t2 / max(fit.iterations, 1):.3f} s each, {fit.n_evals} evaluations), peak RSS "
          f"{rss:.0f} MB, converged={fit.converged}")


if __name__ == "__main__":
    main()
