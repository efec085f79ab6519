"""Laplace's error on the GLMM examples of tests/test_glmm_quadrature.py (the README's table).

For each example: the Laplace fit and the adaptive Gauss-Hermite fit (``n_quadrature=25``, the
exact marginal to ~1e-10), the exact marginal at the Laplace MLE by ``scipy.integrate.quad`` per
group (the tests' reference, not the engine), Laplace minus exact, the SD of the random effect
under both fits, and the fit times (medians, Laplace and AGQ alternating in one run).

    python benchmarks/glmm_laplace_error.py [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_glmm_quadrature as T  # noqa: E402 (the references live in the tests)

import mle_ppl  # noqa: E402


def _timed(m, repeats, **kw):
    times, fit = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit = mle_ppl.fit(m, **kw)
        times.append(time.perf_counter() - t0)
    return fit, statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = {}
    cases = [(fam, *T._simulate(fam, 11)) for fam in ("poisson", "bernoulli", "negbin")]
    for fam, y, x, g, G in cases:
        m = T._model(fam, y, x, g, G)
        mle_ppl.fit(m), mle_ppl.fit(m, n_quadrature=25)  # compile outside the timing
        lap, t_lap = _timed(m, args.repeats)
        agq, t_agq = _timed(m, args.repeats, n_quadrature=25)
        exact = T._quad_ref(fam, lap.theta, y, x, g, G)
        rows[fam] = {"groups": G, "rows": len(y), "laplace_minus_exact": lap.loglik - exact,
                     "sd_laplace": float(lap.estimates["sd_u"]),
                     "sd_agq25": float(agq.estimates["sd_u"]),
                     "sd_diff_in_se": float((agq.estimates["sd_u"] - lap.estimates["sd_u"])
                                            / agq.std_errors["sd_u"]),
                     "time_laplace_s": t_lap, "time_agq25_s": t_agq}
    m, d = T._cbpp_model()
    lap, t_lap = _timed(m, 1)
    agq, t_agq = _timed(m, 1, n_quadrature=25)
    rows["cbpp"] = {"groups": 15, "rows": len(d),
                    "laplace_minus_exact": lap.loglik + agq.likelihood.value(lap.x),
                    "sd_laplace": float(lap.estimates["sd_herd"]),
                    "sd_agq25": float(agq.estimates["sd_herd"]),
                    "note": "exact = the AGQ(25) objective at the Laplace MLE (checked against "
                            "glmer nAGQ=25 in the tests)"}
    y, x, g, G = T._slopes_data()
    theta = np.r_[0.35, 0.25, 0.55, 0.35, 0.3]
    rows["poisson_slopes"] = {"groups": G, "rows": len(y), "theta": theta.tolist(),
                              "laplace_minus_exact": T._slopes_ref(theta, y, x, g, G, 1)
                              - T._slopes_ref(theta, y, x, g, G, 20)}
    for k, v in rows.items():
        print(k, json.dumps(v))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
