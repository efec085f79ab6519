"""Where a mixed model's first fit spends its time: one fresh process per case, fresh compile cache.

Each case runs in its own ``python`` process with ``MLE_PPL_CACHE_DIR`` set to a new empty
directory (a cold on-disk cache; ``--warm`` runs it a second time on the same directory), and
reports, as exclusive times (a phase's time without the phases nested in it):

- ``import``: ``import mle_ppl`` (and pymc);
- ``build``: building the ``pm.Model`` (model file parse/bind, or the PyMC builder);
- ``graph``: the Laplace objective's symbolic graphs (``LaplaceMarginal.__init__``);
- ``compile``: PyTensor rewriting + linking (or loading from the disk cache) of every function,
  with their number and the number of nodes of each rewritten graph;
- ``structure``: the sparsity probe of the random effects' Hessian;
- ``newton``: the inner Newton (number of solves and of Newton iterations);
- ``gradient``: the exact θ-gradient (implicit function theorem + log-det derivative);
- ``hessian``: the θ-Hessian (number of gradient evaluations in it);
- ``fit``: the whole ``mle_ppl.fit`` call; ``profile``: ``conf_int(method="profile")``.

    python benchmarks/bench_mixed_startup.py [--cases linear_mixed ri3 ...] [--warm] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CASES = ("linear_mixed", "binomial_mixed", "ri3", "ri", "slopes", "crossed", "nested")


def _build(case: str):
    import numpy as np
    import pymc as pm

    if case in ("linear_mixed", "binomial_mixed"):
        import mle_ppl
        from mle_ppl._src.engine.fit import resolve_model

        return resolve_model(mle_ppl.load_model(case), None)[0]
    rng = np.random.default_rng(1)
    if case in ("ri", "ri3"):  # tests/test_random_effects.py::_intercept_model (ri3: no slope)
        G, n = 30, 300
        g = rng.integers(0, G, n)
        x = rng.normal(size=n)
        y = 1 + 0.5 * x + rng.normal(0, 0.7, G)[g] + rng.normal(0, 1.0, n)
        with pm.Model(coords={"group": np.arange(G)}) as m:
            a = pm.Flat("a")
            mu = a + (0 if case == "ri3" else pm.Flat("b") * pm.Data("x", x))
            sd_u = pm.HalfFlat("sd_u")
            s = pm.HalfFlat("sigma")
            u = pm.Normal("u", 0, sd_u, dims="group")
            pm.Normal("y", mu + u[pm.Data("g", g)], s, observed=y)
        return m
    if case == "slopes":  # tests/test_random_effects.py, correlated intercept and slope
        import pytensor.tensor as pt

        rng = np.random.default_rng(2)
        G, n = 25, 400
        g = rng.integers(0, G, n)
        x = rng.normal(size=n)
        U = rng.multivariate_normal([0, 0], [[0.5, 0.15], [0.15, 0.3]], G)
        y = 1 + 0.5 * x + U[g, 0] + U[g, 1] * x + rng.normal(0, 1.0, n)
        with pm.Model(coords={"group": np.arange(G), "effect": ["Intercept", "x"]}) as m:
            a = pm.Flat("a")
            b = pm.Flat("b")
            sds = pm.HalfFlat("sd_u", dims="effect")
            s = pm.HalfFlat("sigma")
            rho = pm.Uniform("rho", -1, 1)
            off = rho * sds[0] * sds[1]
            cov = pt.stack([pt.stack([sds[0] ** 2, off]), pt.stack([off, sds[1] ** 2])])
            u = pm.MvNormal("u", mu=pt.zeros(2), cov=cov, dims=("group", "effect"))
            pm.Normal("y", a + b * x + u[g, 0] + u[g, 1] * x, s, observed=y)
        return m
    if case == "crossed":  # tests/test_random_effects_grouping.py::_crossed
        rng = np.random.default_rng(2)
        A, B, n = 15, 10, 240
        ia = rng.integers(0, A, n)
        ib = rng.integers(0, B, n)
        x = rng.normal(size=n)
        y = (1 + 0.5 * x + rng.normal(0, 0.7, A)[ia] + rng.normal(0, 0.5, B)[ib]
             + rng.normal(0, 1, n))
        with pm.Model(coords={"A": np.arange(A), "B": np.arange(B)}) as m:
            c = pm.Flat("c")
            d = pm.Flat("d")
            sa = pm.HalfFlat("sd_a")
            sb = pm.HalfFlat("sd_b")
            s = pm.HalfFlat("sigma")
            ua = pm.Normal("ua", 0, sa, dims="A")
            ub = pm.Normal("ub", 0, sb, dims="B")
            pm.Normal("y", c + d * x + ua[ia] + ub[ib], s, observed=y)
        return m
    if case == "nested":  # tests/test_random_effects_grouping.py, nested
        rng = np.random.default_rng(5)
        G1, G2, n = 12, 3, 288
        g1 = np.repeat(np.arange(G1), n // G1)
        g2 = rng.integers(0, G2, n)
        g12 = g1 * G2 + g2
        x = rng.normal(size=n)
        y = (1 + 0.5 * x + rng.normal(0, 0.8, G1)[g1] + rng.normal(0, 0.5, G1 * G2)[g12]
             + rng.normal(0, 1, n))
        with pm.Model(coords={"g1": np.arange(G1), "g12": np.arange(G1 * G2)}) as m:
            a = pm.Flat("a")
            b = pm.Flat("b")
            s1 = pm.HalfFlat("sd_g1")
            s2 = pm.HalfFlat("sd_g12")
            s = pm.HalfFlat("sigma")
            u1 = pm.Normal("u1", 0, s1, dims="g1")
            u2 = pm.Normal("u2", 0, s2, dims="g12")
            pm.Normal("y", a + b * x + u1[g1] + u2[g12], s, observed=y)
        return m
    raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")


class Timer:
    """Exclusive wall time and call counts per phase (nested phases are subtracted)."""

    def __init__(self):
        self.t = {}
        self.n = {}
        self.stack = []

    def wrap(self, owner, attr, phase):
        fn = getattr(owner, attr)
        timer = self

        def wrapped(*a, **k):
            timer.stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                inner = timer.stack.pop()
                timer.t[phase] = timer.t.get(phase, 0.0) + dt - inner
                timer.n[phase] = timer.n.get(phase, 0) + 1
                if timer.stack:
                    timer.stack[-1] += dt
        setattr(owner, attr, wrapped)


def run_case(case: str, profile: bool) -> dict:
    t0 = time.perf_counter()
    import pymc  # noqa: F401

    import mle_ppl
    from mle_ppl._src.engine import laplace as lap
    from mle_ppl._src.engine import likelihood as lik

    out = {"case": case, "import": time.perf_counter() - t0}
    timer = Timer()
    sizes = []
    orig_compile = lik._compile

    def counting_compile(inputs, outputs, mode, *, model=None):
        fn = orig_compile(inputs, outputs, mode, model=model)
        inner = getattr(getattr(fn, "fn", fn), "fn", None)
        maker = getattr(inner, "maker", None)
        sizes.append(len(maker.fgraph.apply_nodes) if maker is not None else -1)
        return fn

    lik._compile = counting_compile
    timer.wrap(lik, "_compile", "compile")
    for mod in [m for n, m in sys.modules.items() if n.startswith("mle_ppl._src.engine")]:
        if getattr(mod, "_compile", None) is orig_compile:
            mod._compile = lik._compile
    cls = lap.LaplaceMarginal
    for attr, phase in getattr(lap, "BENCH_PHASES", (
            ("__init__", "graph"), ("_gradient", "gradient"),
            ("hessian", "hessian"), ("value_and_grad", "value_and_grad"))):
        if hasattr(cls, attr):
            timer.wrap(cls, attr, phase)
    timer.wrap(lap.Structure, "__init__", "structure")
    timer.wrap(lap, "incidence", "structure")
    iters = []
    orig_newton = cls._newton_loop

    def newton(self, *a, **k):
        s = orig_newton(self, *a, **k)
        iters.append(int(s.iters))
        return s

    cls._newton_loop = newton
    timer.wrap(cls, "_newton_loop", "newton")
    t = time.perf_counter()
    m = _build(case)
    out["build"] = time.perf_counter() - t
    grads_in_hessian = []
    orig_h = cls.hessian

    def hessian(self, x):
        before = timer.n.get("gradient", 0)
        r = orig_h(self, x)
        grads_in_hessian.append(timer.n.get("gradient", 0) - before)
        return r

    cls.hessian = hessian
    timer.wrap(cls, "hessian", "hessian")
    t = time.perf_counter()
    fit = mle_ppl.fit(m)
    out["fit"] = time.perf_counter() - t
    out["loglik"] = fit.loglik
    out["converged"] = bool(fit.converged)
    out["iterations"] = int(fit.convergence.iterations)
    out["phases"] = {k: round(v, 3) for k, v in timer.t.items()}
    out["calls"] = dict(timer.n)
    out["compiled"] = sizes
    out["newton_iters"] = iters
    out["grads_per_hessian"] = grads_in_hessian
    if profile:
        t = time.perf_counter()
        fit.conf_int(method="profile")
        out["profile"] = time.perf_counter() - t
        out["phases_after_profile"] = {k: round(v, 3) for k, v in timer.t.items()}
    out["total"] = time.perf_counter() - t0
    out["cpu"] = time.process_time()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--warm", action="store_true", help="run each case again on its cache")
    ap.add_argument("--profile", action="store_true", help="also time profile intervals")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(args.one, args.profile)))
        return
    results = []
    for case in args.cases:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, MLE_PPL_CACHE_DIR=cache)
            for run in ("cold", "warm") if args.warm else ("cold",):
                t = time.perf_counter()
                cmd = [sys.executable, __file__, "--one", case] + (
                    ["--profile"] if args.profile else [])
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                wall = time.perf_counter() - t
                if proc.returncode:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r["run"], r["process_wall"] = run, wall
                results.append(r)
                ph = r["phases"]
                print(f"{case:15s} {run}: process {wall:5.1f} s (cpu {r['cpu']:.1f} s) | "
                      f"import {r['import']:.1f} "
                      f"build {r['build']:.2f} fit {r['fit']:.2f}"
                      + (f" profile {r['profile']:.2f}" if "profile" in r else "")
                      + " | " + " ".join(f"{k} {v:.2f}" for k, v in ph.items())
                      + f" | compiled {len(r['compiled'])} fns, nodes {r['compiled']}"
                      f" | newton solves {len(r['newton_iters'])}, iters "
                      f"{sum(r['newton_iters'])} | gradients {r['calls'].get('gradient', 0)}"
                      f" | outer {r['iterations']} | grads/hessian "
                      f"{r['grads_per_hessian']} | loglik {r['loglik']:.10g}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
