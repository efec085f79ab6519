"""Hard nonlinear least squares: mle-ppl against scipy.optimize.least_squares and lmfit.

The suite is the one of ``tests/test_nonlinear_hard.py`` (``tests/_nonlinear_problems.py``):
11 published nonlinear model functions (NIST StRD Misra1a, Thurber, BoxBOD, MGH09, MGH10,
Eckerle4, Bennett5, Rat42, Rat43, Lanczos; a Filip-like degree-10 polynomial), data made from
them with a fixed seed, the optimum of those data computed in 80-digit arithmetic (mpmath), and
2-3 starts per problem (the published far and near starts; a tied start for Lanczos). Every tool
starts from the same point.

Tools
-----
* mle-ppl: ``mle_ppl.fit(pm_model, start=...)`` on the Gaussian model with flat priors (its
  ``converged`` flag).
* ``scipy.optimize.least_squares`` with ``method="trf"`` and ``method="lm"``, at their default
  tolerances and at ``xtol=ftol=gtol=1e-15`` (their best accuracy), ``max_nfev=10000``
  (``success``).
* lmfit ``minimize(..., method="leastsq")`` (MINPACK through lmfit) at its defaults and at
  ``xtol=ftol=gtol=1e-15``, ``max_nfev=10000`` (``success``).

For each fit: correct significant digits (minimum over the coefficients of the log relative
error against the reference; the three exponentials of Lanczos compared in rate order), whether
the tool said it succeeded, and so the count of "converged at a wrong answer" (said success with
fewer than 6 digits).

Usage::

    python benchmarks/bench_nonlinear.py                      # table on stdout
    python benchmarks/bench_nonlinear.py --json out.json      # also save every fit
    python benchmarks/bench_nonlinear.py --from-json out.json # re-print a saved run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from _nonlinear_problems import BY_NAME, CASES, digits, pymc_model, reference  # noqa: E402

TOOLS = ("mle-ppl", "scipy trf", "scipy lm", "lmfit leastsq",
         "scipy trf (tol 1e-15)", "scipy lm (tol 1e-15)", "lmfit leastsq (tol 1e-15)")
TIGHT = {"xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15}


def _canonical(name, b):
    b = np.asarray(b, dtype=float)
    if name.startswith("Lanczos") and np.all(np.isfinite(b)):
        pairs = sorted(zip(b[0::2], b[1::2], strict=True), key=lambda p: p[1])
        return np.array([v for p in pairs for v in p])
    return b


def _mle_ppl(prob, start, models):
    import mle_ppl

    if prob.name not in models:
        models[prob.name] = pymc_model(prob)
        mle_ppl.fit(models[prob.name], start=dict(zip(prob.names, prob.starts[next(iter(
            prob.starts))], strict=True)), warn=False)  # compile outside the timing
    t0 = time.perf_counter()
    fit = mle_ppl.fit(models[prob.name], start=dict(zip(prob.names, start, strict=True)),
                      warn=False)
    dt = time.perf_counter() - t0
    b = [fit.estimates[k] for k in prob.names]
    msg = "; ".join(fit.warnings)[:160]
    return b, bool(fit.converged), dt, msg


def _scipy(prob, start, method, tight):
    from scipy.optimize import least_squares

    def resid(b):
        return prob.y - prob.f(prob.x, b, np)

    t0 = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            res = least_squares(resid, np.asarray(start, float), method=method,
                                max_nfev=10000, **(TIGHT if tight else {}))
            b, ok, msg = res.x, bool(res.success), str(res.message)
        except Exception as err:  # a tool crashing from a start counts as not converged
            b, ok, msg = np.full(prob.p, np.nan), False, f"{type(err).__name__}: {err}"
    return list(map(float, b)), ok, time.perf_counter() - t0, msg[:160]


def _lmfit(prob, start, tight):
    import lmfit

    params = lmfit.Parameters()
    for k, v in zip(prob.names, start, strict=True):
        params.add(k, value=float(v))

    def resid(p):
        return prob.y - prob.f(prob.x, [p[k].value for k in prob.names], np)

    t0 = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            kw = dict(TIGHT, max_nfev=10000) if tight else {}
            res = lmfit.minimize(resid, params, method="leastsq", **kw)
            b = [res.params[k].value for k in prob.names]
            ok, msg = bool(res.success), str(res.message)
        except Exception as err:
            b, ok, msg = [np.nan] * prob.p, False, f"{type(err).__name__}: {err}"
    return list(map(float, b)), ok, time.perf_counter() - t0, msg[:160]


def run() -> dict:
    models: dict = {}
    rows = []
    for name, sname in CASES:
        prob = BY_NAME[name]
        ref = _canonical(name, reference(name).b)
        start = prob.starts[sname]
        for tool in TOOLS:
            tight = "1e-15" in tool
            if tool == "mle-ppl":
                b, ok, dt, msg = _mle_ppl(prob, start, models)
            elif tool.startswith("scipy"):
                b, ok, dt, msg = _scipy(prob, start, tool.split()[1], tight)
            else:
                b, ok, dt, msg = _lmfit(prob, start, tight)
            dg = digits(_canonical(name, b), ref)
            rows.append({"problem": name, "start": sname, "tool": tool, "digits": round(dg, 2),
                         "converged": ok, "seconds": round(dt, 3), "message": msg})
            print(f"{name:9s} {sname:8s} {tool:26s} digits {dg:5.1f} converged {ok!s:5s} "
                  f"{dt:6.2f} s", file=sys.stderr, flush=True)
    import lmfit
    import scipy

    import mle_ppl

    return {"rows": rows, "versions": {
        "mle_ppl": getattr(mle_ppl, "__version__", "dev"), "scipy": scipy.__version__,
        "lmfit": lmfit.__version__, "numpy": np.__version__,
        "python": platform.python_version()}, "date": time.strftime("%Y-%m-%d")}


def summary(result: dict) -> str:
    rows = result["rows"]
    n_cases = len({(r["problem"], r["start"]) for r in rows})
    out = [f"{n_cases} fits (problem x start) per tool; versions: "
           + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), "",
           "| tool | ≥ 6 digits | ≥ 8 digits | converged at a wrong answer (< 6 digits) | "
           "not converged | total s |", "|---|---:|---:|---:|---:|---:|"]
    for tool in TOOLS:
        rs = [r for r in rows if r["tool"] == tool]
        six = sum(r["digits"] >= 6 for r in rs)
        eight = sum(r["digits"] >= 8 for r in rs)
        wrong = sum(r["converged"] and r["digits"] < 6 for r in rs)
        notc = sum(not r["converged"] for r in rs)
        secs = sum(r["seconds"] for r in rs)
        out.append(f"| {tool} | {six} | {eight} | {wrong} | {notc} | {secs:.1f} |")
    out += ["", "Correct digits per fit (`*` = the tool reported success):", ""]
    head = "| problem | start | " + " | ".join(TOOLS) + " |"
    out += [head, "|---|---|" + "---:|" * len(TOOLS)]
    cases = list(dict.fromkeys((r["problem"], r["start"]) for r in rows))
    for p, s in cases:
        cells = []
        for tool in TOOLS:
            r = next(r for r in rows if (r["problem"], r["start"], r["tool"]) == (p, s, tool))
            d = max(r["digits"], 0.0)
            cells.append(f"{d:.1f}{'*' if r['converged'] else ''}")
        out.append(f"| {p} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="save every fit to this file")
    ap.add_argument("--from-json", help="re-print a saved run")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as fh:
            result = json.load(fh)
    else:
        result = run()
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=1)
    print(summary(result))


if __name__ == "__main__":
    main()
