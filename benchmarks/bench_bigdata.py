"""Big data: logistic regression from Parquet files fitted in memory, streamed, and on Dask.

Logistic regression with an intercept and p slopes, n rows in ``--files`` Parquet files (generated
once per size into ``--dir``). Each configuration runs in its own process, so that its peak RSS
(``ru_maxrss``) is its own:

- ``memory``: ``mle_ppl.fit(model, data=pandas.read_parquet(files))`` (read + fit);
- ``streamed``: ``mle_ppl.fit(model, data="dir/*.parquet", chunk_rows=N)``;
- ``dask``: a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, then
  ``mle_ppl.fit(model, data=dask.dataframe.read_parquet(files))`` (cluster start-up timed apart);
- ``daskml-admm`` / ``daskml-newton``: dask-ml's ``LogisticRegression`` on the same cluster and
  data (``C=1e12``: no penalty in effect), its time and its distance from the exact MLE in
  standard errors of the in-memory fit.

Times are wall-clock from the start of reading to the standard errors, compilation included
(every mle-ppl configuration compiles once, in the driver and, for Dask, in each worker).
Configurations run round-robin over ``--repeats`` rounds; the table shows medians (time ratios:
the median over rounds of each round's ratio to that round's in-memory time) and the load average
around the runs. ``streamed-noprefetch`` is ``streamed`` without the read-ahead thread
(``MLE_PPL_PREFETCH=0``).

Usage::

    .venv/bin/python benchmarks/bench_bigdata.py --n 10000000 --p 20 --json out.json
    .venv/bin/python benchmarks/bench_bigdata.py --n 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("memory", "streamed", "streamed-noprefetch", "dask", "daskml-admm", "daskml-newton")


def model_text(p: int) -> str:
    cols = ", ".join(f'"x{j}"' for j in range(p))
    return f"""
[model]
name = "bench_logit"
[data]
y = "y"
x = [{cols}]
[parameters]
alpha = {{}}
beta = {{ dims = "x" }}
[likelihood]
y = {{ distribution = "Bernoulli", logit_p = "alpha + x @ beta" }}
"""


def generate(root: Path, n: int, p: int, files: int, seed: int = 0) -> Path:
    import numpy as np
    import pandas as pd

    d = root / f"logit_n{n}_p{p}_f{files}"
    done = d / "_done"
    if done.exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    beta = rng.normal(scale=0.3, size=p)
    per = -(-n // files)
    for i in range(files):
        m = min(per, n - i * per)
        X = rng.normal(size=(m, p))
        eta = -0.5 + X @ beta
        y = (rng.random(m) < 1 / (1 + np.exp(-eta))).astype(np.int8)
        df = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
        df["y"] = y
        df.to_parquet(d / f"part{i:03d}.parquet", row_group_size=250_000)
    (d / "model.toml").write_text(model_text(p))
    done.write_text("ok")
    return d


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(config: str, d: Path, chunk_rows: int) -> dict:
    """One configuration in this process; returns its measurements."""
    import numpy as np

    import mle_ppl

    files = sorted(str(f) for f in d.glob("*.parquet"))
    model = d / "model.toml"
    out: dict = {"config": config}
    if config == "memory":
        import pandas as pd

        t0 = time.perf_counter()
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        fit = mle_ppl.fit(model, data=df)
        se = fit.std_errors.to_numpy()
        out["wall"] = time.perf_counter() - t0
    elif config.startswith("streamed"):
        if config == "streamed-noprefetch":
            os.environ["MLE_PPL_PREFETCH"] = "0"
        t0 = time.perf_counter()
        fit = mle_ppl.fit(model, data=str(d / "*.parquet"), chunk_rows=chunk_rows)
        se = fit.std_errors.to_numpy()
        out["wall"] = time.perf_counter() - t0
    else:
        import logging

        import dask.dataframe as dd
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               silence_logs=logging.ERROR, dashboard_address=":0")
        client = Client(cluster)
        out["cluster_start"] = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            if config == "dask":
                ddf = dd.read_parquet(files)
                fit = mle_ppl.fit(model, data=ddf)
                se = fit.std_errors.to_numpy()
                out["wall"] = time.perf_counter() - t0
            else:
                from dask_ml.linear_model import LogisticRegression

                ddf = dd.read_parquet(files)
                p = len(ddf.columns) - 1
                cols = [f"x{j}" for j in range(p)] + ["y"]
                A = ddf[cols].astype("float64").to_dask_array(lengths=True).persist()
                X, y = A[:, :p], A[:, p]
                solver = config.split("-")[1]
                lr = LogisticRegression(solver=solver, C=1e12, max_iter=100, tol=1e-8)
                lr.fit(X, y)
                out["wall"] = time.perf_counter() - t0
                out["theta"] = [float(lr.intercept_), *map(float, np.ravel(lr.coef_))]
                out["rss_mb"] = _peak_rss_mb()
                return out
        finally:
            client.close()
            cluster.close()
    out["theta"] = fit.theta.tolist()
    out["se"] = se.tolist()
    out["iterations"] = fit.convergence.iterations
    out["converged"] = bool(fit.converged)
    lik = fit.likelihood
    out["passes"] = getattr(lik, "passes", None)
    out["pass_seconds"] = getattr(lik, "seconds", None)
    out["data_source"] = fit.source.reading
    out["rss_mb"] = _peak_rss_mb()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=float, default=1e7)
    ap.add_argument("--p", type=int, default=20)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--chunk-rows", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dir", default="/tmp/mle_ppl_bench_bigdata")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)  # one config, in a child
    args = ap.parse_args(argv)
    n = int(args.n)
    d = generate(Path(args.dir), n, args.p, args.files)
    if args.run:
        print(json.dumps(run_one(args.run, d, args.chunk_rows)))
        return 0
    results: dict[str, list] = {c: [] for c in args.configs}
    for r in range(args.repeats):
        for c in args.configs:  # round-robin: load bursts hit every configuration alike
            cmd = [sys.executable, __file__, "--n", str(n), "--p", str(args.p), "--files",
                   str(args.files), "--chunk-rows", str(args.chunk_rows), "--dir", args.dir,
                   "--run", c]
            load = os.getloadavg()[0]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode != 0:
                print(f"{c}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                results[c].append({"config": c, "error": proc.stderr[-2000:]})
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["load_before"], res["load_after"] = load, os.getloadavg()[0]
            results[c].append(res)
            print(f"round {r + 1} {c}: {res.get('wall', float('nan')):.1f} s, "
                  f"{res.get('rss_mb', float('nan')):.0f} MB", file=sys.stderr, flush=True)
    summary = summarize(results)
    doc = {"n": n, "p": args.p, "files": args.files, "chunk_rows": args.chunk_rows,
           "repeats": args.repeats, "runs": results, "summary": summary}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    print(markdown(doc))
    return 0


def summarize(results: dict) -> dict:
    import numpy as np

    ok = {c: [r for r in rs if "wall" in r] for c, rs in results.items()}
    ref = ok.get("memory", [])
    theta_ref = np.array(ref[0]["theta"]) if ref else None
    se_ref = np.array(ref[0]["se"]) if ref else None
    out = {}
    t_mem = statistics.median(r["wall"] for r in ref) if ref else None
    rss_mem = statistics.median(r["rss_mb"] for r in ref) if ref else None
    for c, rs in ok.items():
        if not rs:
            out[c] = {"error": True}
            continue
        wall = statistics.median(r["wall"] for r in rs)
        rss = statistics.median(r["rss_mb"] for r in rs)
        row = {"wall_s": wall, "rss_mb": rss}
        if t_mem:
            row["time_ratio"] = wall / t_mem
            row["rss_ratio"] = rss / rss_mem
        if theta_ref is not None:
            row["max_dist_se"] = float(np.max(np.abs(np.array(rs[0]["theta"]) - theta_ref)
                                              / se_ref))
            if "se" in rs[0]:
                row["max_se_rel"] = float(np.max(np.abs(np.array(rs[0]["se"]) / se_ref - 1)))
        for k in ("passes", "iterations", "cluster_start"):
            if rs[0].get(k) is not None:
                row[k] = rs[0][k]
        if rs[0].get("pass_seconds") and rs[0].get("passes"):
            row["seconds_per_pass"] = statistics.median(r["pass_seconds"] / r["passes"]
                                                        for r in rs)
        loads = [r[k] for r in rs for k in ("load_before", "load_after") if k in r]
        if loads:
            row["load_median"] = statistics.median(loads)
        if c == "dask" and t_mem and rs[0].get("passes"):
            # passes = Newton iterations + 2 (the start, the certifying Hessian's point)
            row["overhead_per_pass_s"] = (wall - t_mem) / rs[0]["passes"]
        if t_mem and c != "memory":  # ratios within each round (same minutes), then median
            per_round = [r["wall"] / m["wall"] for r, m in zip(rs, ref, strict=False)]
            row["time_ratio_rounds"] = per_round
            row["time_ratio_median_of_rounds"] = statistics.median(per_round)
        out[c] = row
    return out


def markdown(doc: dict) -> str:
    lines = [f"logistic regression, n = {doc['n']:,}, p = {doc['p']} (+ intercept), "
             f"{doc['files']} Parquet files, chunk_rows = {doc['chunk_rows']:,}, "
             f"{doc['repeats']} round(s) (medians)", "",
             "| configuration | wall s | x in-memory | driver peak RSS MB | x in-memory | "
             "data passes | s per pass | max |Δθ| / SE | max SE rel. diff | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c, r in doc["summary"].items():
        if r.get("error"):
            lines.append(f"| {c} | failed | | | | | | | | |")
            continue
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        ratio = r.get("time_ratio_median_of_rounds", r.get("time_ratio"))
        lines.append(f"| {c} | {r['wall_s']:.1f} | {fmt(ratio, '.2f')} | "
                     f"{r['rss_mb']:.0f} | {fmt(r.get('rss_ratio'), '.2f')} | "
                     f"{r.get('passes', '')} | {fmt(r.get('seconds_per_pass'), '.2f')} | "
                     f"{fmt(r.get('max_dist_se'), '.2e')} | "
                     f"{fmt(r.get('max_se_rel'), '.1e')} | {fmt(r.get('load_median'), '.1f')} |")
    d = doc["summary"].get("dask", {})
    if "overhead_per_pass_s" in d:
        lines.append("")
        lines.append(f"Dask: cluster start {d.get('cluster_start', float('nan')):.1f} s (not in "
                     f"wall); overhead per data pass vs in memory "
                     f"{d['overhead_per_pass_s']:.2f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
