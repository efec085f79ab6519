"""NUTS started at the MLE (``init="mle"``) against PyMC's default (``init="pymc"``).

For each bundled model (flat priors) and the stack-loss regression, and for each tuning length,
both initialisations sample the same model with the same seeds, round-robin (so bursts of load
on a shared machine hit both alike). Recorded per run: divergences after tuning, lowest bulk and
tail ESS over all parameters, largest R-hat, the sampling wall time (PyMC's ``sampling_time``,
compilation excluded) and ESS per second. "Tuning needed" is the shortest tuning length at which
every seed ran without divergences, with R-hat <= 1.01 and ESS >= 100 per chain.

    python benchmarks/bench_bayes_init.py                  # full run (~30-60 min on 2 cores)
    python benchmarks/bench_bayes_init.py --quick          # stack loss only, one seed, tune 200
    python benchmarks/bench_bayes_init.py --json out.json  # also save every run
    python benchmarks/bench_bayes_init.py --from-json a.json b.json   # re-print saved runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STACKLOSS = ROOT / "benchmarks" / "stackloss.toml"
TUNES = (50, 200, 1000)
SEEDS = (1, 2, 3)
INITS = ("mle", "pymc")


def one_run(model: str, init: str, tune: int, seed: int, draws: int, chains: int) -> dict:
    import arviz_stats

    import mle_ppl
    from mle_ppl._src.errors import MLEError, SamplingWarning

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplingWarning)
            warnings.simplefilter("ignore", UserWarning)
            tree = mle_ppl.sample(model, priors="flat", draws=draws, tune=tune, chains=chains,
                                  cores=1, random_seed=seed, init=init)
    except MLEError as err:
        return {"error": str(err).split(". ")[0]}
    except Exception as err:  # noqa: BLE001 - a crash is a result of the benchmark too
        return {"error": f"{type(err).__name__}: {err}"}
    wall = time.perf_counter() - t0
    post = tree["posterior"].to_dataset()
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        ess_b = min(float(np.nanmin(v.values)) for v in arviz_stats.ess(post).data_vars.values())
        ess_t = min(float(np.nanmin(v.values))
                    for v in arviz_stats.ess(post, method="tail").data_vars.values())
        rhat = max(float(np.nanmax(v.values)) for v in arviz_stats.rhat(post).data_vars.values())
    secs = float(tree["sample_stats"].attrs.get("sampling_time", wall))
    return {"divergences": int(tree["sample_stats"]["diverging"].sum()), "ess_bulk": ess_b,
            "ess_tail": ess_t, "r_hat": rhat, "sampling_s": secs, "wall_s": wall,
            "ess_per_s": min(ess_b, ess_t) / secs if secs > 0 else float("nan"),
            "init_used": tree["posterior"].attrs.get("mle_ppl_init", "")}


def healthy(r: dict, chains: int) -> bool:
    return ("error" not in r and r["divergences"] == 0 and r["r_hat"] <= 1.01
            and min(r["ess_bulk"], r["ess_tail"]) >= 100 * chains)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                    help="re-print the table of saved runs (several files are merged)")
    args = ap.parse_args(argv)
    if args.from_json:
        rows = [r for f in args.from_json for r in json.loads(Path(f).read_text())["rows"]]
        print(markdown(summarize(rows, args.chains), args))
        return 0
    from mle_ppl._src.model.library import bundled_models

    models = args.models or ([str(STACKLOSS)] if args.quick else
                             [str(STACKLOSS), *sorted(bundled_models())])
    tunes = (200,) if args.quick else TUNES
    seeds = SEEDS[:1] if args.quick else SEEDS
    rows = []
    for model in models:
        name = Path(model).stem
        for tune in tunes:
            for seed in seeds:
                for init in INITS:  # round-robin: both inits back to back, same seed
                    r = one_run(model, init, tune, seed, args.draws, args.chains)
                    r.update(model=name, init=init, tune=tune, seed=seed)
                    rows.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
    summary = summarize(rows, args.chains)
    print(markdown(summary, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary,
                                               "draws": args.draws, "chains": args.chains},
                                              indent=1))
    return 0


def summarize(rows: list[dict], chains: int) -> list[dict]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for init in INITS:
            mine = [r for r in rows if r["model"] == model and r["init"] == init]
            errors = [r["error"] for r in mine if "error" in r]
            if errors:
                out.append({"model": model, "init": init, "error": errors[0]})
                continue
            tunes = sorted({r["tune"] for r in mine})
            need = next((t for t in tunes if all(healthy(r, chains) for r in mine
                                                 if r["tune"] == t)), None)
            longest = [r for r in mine if r["tune"] == tunes[-1]]
            out.append({
                "model": model, "init": init, "tune_needed": need, "tunes_tried": tunes,
                "divergences": {t: sum(r["divergences"] for r in mine if r["tune"] == t)
                                for t in tunes},
                "runs_per_tune": len(longest),
                "ess_per_s": statistics.median(r["ess_per_s"] for r in longest),
                "min_ess": min(min(r["ess_bulk"], r["ess_tail"]) for r in longest),
                "sampling_s": statistics.median(r["sampling_s"] for r in longest),
                "dense": [("dense" in r["init_used"]) for r in longest][0],
            })
    return out


def markdown(summary: list[dict], args) -> str:
    lines = [f"{args.chains} chains x {args.draws} draws, cores=1; divergences summed over seeds; "
             "ESS/s and sampling time: medians at the longest tuning",
             "", "| model | init | divergences by tune | tuning needed | min ESS | ESS/s | "
             "sampling s | mass matrix |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        if "error" in s:
            lines.append(f"| {s['model']} | {s['init']} | not sampled: {s['error']} | | | | | |")
            continue
        div = ", ".join(f"{t}: {d}" for t, d in s["divergences"].items())
        need = s["tune_needed"] if s["tune_needed"] is not None else f"> {s['tunes_tried'][-1]}"
        mass = ("dense" if s["dense"] else "diagonal") if s["init"] == "mle" else "diag (adapt)"
        lines.append(f"| {s['model']} | {s['init']} | {div} | {need} | {s['min_ess']:.0f} | "
                     f"{s['ess_per_s']:.0f} | {s['sampling_s']:.1f} | {mass} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
