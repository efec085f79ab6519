"""Benchmark ``mle_ppl.fit`` against statsmodels, scikit-learn, ``pymc.find_MAP`` and numpy.

Prints a table of MEDIAN wall times over several repeats and the ratio of mle-ppl's time to each
peer's, all measured in the same run, plus accuracy (max |difference| of the coefficients and
standard errors from statsmodels') and the peak RSS increase of each fit. Then the cold-start
numbers (fresh processes) and the issue's targets.

Usage::

    python benchmarks/bench_fit.py                 # full run (several minutes)
    python benchmarks/bench_fit.py --quick         # n = 1e4 and 1e5 only, few repeats (smoke test)
    python benchmarks/bench_fit.py --repeats 7 --json bench.json

How it measures
---------------
* Each case (logistic n = 1e4, 1e5, 1e6 with p = 20; Gaussian n = 1e6 with p = 50) runs in its own
  subprocess. Every tool first fits a warm-up data set (mle-ppl compiles there), then the repeats
  go round-robin: data set k is generated once and every tool fits it in turn, so a burst of load
  on this shared machine hits all tools alike. The time is the median over the repeats.
* mle-ppl (warm): one ``pm.Model`` built on ``pm.Data`` containers; each repeat does
  ``pm.set_data`` with fresh data of the same shape (not timed) and times ``mle_ppl.fit(m)`` plus
  ``fit.std_errors``. ``mle_ppl._src.engine.likelihood.COMPILE_COUNT`` must not move after
  the warm-up.
* ``pymc.find_MAP`` runs on the same ``pm.Model`` (same data), as users call it: it compiles its
  functions on every call. ``compute_hessian=True`` gives it standard errors (the row the target
  uses); the row without it is printed for reference.
* statsmodels: ``sm.Logit(y, X).fit(disp=0).bse`` / ``sm.OLS(y, add_constant(X)).fit().bse``
  (model construction included). scikit-learn: ``LogisticRegression(C=np.inf)`` (unpenalised in
  scikit-learn >= 1.8; ``penalty=None`` is deprecated) with its default ``lbfgs`` solver and with
  ``newton-cholesky``; ``LinearRegression``. No standard errors. numpy: ``lstsq`` plus the closed
  form MLE standard errors ``sqrt(diag((X'X)^-1) * RSS/n)``.
* Accuracy: coefficients (logistic: beta; Gaussian: alpha and beta) and standard errors against
  statsmodels on the same data; statsmodels' OLS standard errors use RSS/(n-k), so they are
  rescaled by sqrt((n-k)/n) to the MLE's RSS/n.
* Memory: peak RSS increase during the fit, from ``/proc/self/status`` (VmHWM, reset before each
  fit by writing 5 to ``/proc/self/clear_refs``), so C allocations count; where that reset is not
  available, ``resource.getrusage`` (an upper bound).
* Cold: wall time of ``python -c "import mle_ppl, ...; fit"`` on a small model in a fresh process,
  PyTensor's compile cache warm (one untimed run first); and of ``python -c "import mle_ppl"``.

BLAS settings (OPENBLAS_CORETYPE, thread counts) are left as they are and reported in the header.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

#: The cases: name -> (kind, n, p).
CASES = {
    "logit_1e4": ("logit", 10_000, 20),
    "logit_1e5": ("logit", 100_000, 20),
    "logit_1e6": ("logit", 1_000_000, 20),
    "gauss_1e6": ("gauss", 1_000_000, 50),
    "pois_1e6": ("pois", 1_000_000, 20),
}
QUICK_CASES = ("logit_1e4", "logit_1e5")

#: Tools per kind, in the order of the table. The first is mle-ppl, the second the reference.
TOOLS = {
    "logit": ("mle_ppl", "mle_ppl_numpy_y", "statsmodels", "sklearn_lbfgs",
              "sklearn_newton_cholesky", "sklearn_lbfgs_tight", "sklearn_newton_cholesky_tight",
              "find_map_se", "find_map"),
    "gauss": ("mle_ppl", "mle_ppl_numpy_y", "statsmodels", "sklearn", "numpy_lstsq",
              "find_map_se", "find_map"),
    "pois": ("mle_ppl", "mle_ppl_numpy_y", "statsmodels", "sklearn_poisson"),
}
LABELS = {
    "mle_ppl": "mle_ppl.fit (+SE, warm)",
    "mle_ppl_numpy_y": "mle_ppl.fit, y NumPy (+SE)",
    "sklearn_poisson": "sklearn PoissonRegressor lbfgs",
    "statsmodels": "statsmodels (+SE)",
    "sklearn_lbfgs": "sklearn LogReg lbfgs",
    "sklearn_newton_cholesky": "sklearn LogReg newton-chol",
    "sklearn_lbfgs_tight": "sklearn lbfgs tol=1e-8",
    "sklearn_newton_cholesky_tight": "sklearn newton-chol tol=1e-10",
    "sklearn": "sklearn LinearRegression",
    "numpy_lstsq": "numpy lstsq (+SE)",
    "find_map_se": "pm.find_MAP (+hessian SE)",
    "find_map": "pm.find_MAP (no SE)",
}

#: The issue's targets: (case, peer, max ratio mle_ppl / peer).
#: Each target holds for both ways of passing y (``pm.Data`` and a NumPy array): "mle_ppl" and
#: "mle_ppl_numpy_y" are both checked against the peer.
TARGETS = (
    ("logit_1e6", "statsmodels", 0.5),
    ("logit_1e6", "find_map_se", 0.5),
    ("logit_1e6", "sklearn_lbfgs_tight", 1.0),
    ("gauss_1e6", "statsmodels", 0.5),
    ("pois_1e6", "statsmodels", 0.5),
)
#: Peak extra memory during a fit, as a multiple of the size of X.
MEMORY_TARGET = 1.5
#: Cold start: ``mle-ppl fit logistic_regression`` / a statsmodels formula script on the same CSV.
COLD_CLI_TARGET = 1.0

COLD_SCRIPT = """
import numpy as np, pymc as pm, mle_ppl
rng = np.random.default_rng(0)
x = rng.standard_normal((200, 3))
y = 1.0 + x @ np.array([0.5, -1.0, 2.0]) + rng.standard_normal(200)
with pm.Model() as m:
    X = pm.Data("X", x)
    alpha = pm.Flat("alpha"); beta = pm.Flat("beta", shape=3); sigma = pm.HalfFlat("sigma")
    pm.Normal("y", mu=alpha + X @ beta, sigma=sigma, observed=pm.Data("y_obs", y))
fit = mle_ppl.fit(m)
assert fit.converged and np.all(np.isfinite(fit.std_errors))
"""


# --------------------------------------------------------------------------- data and memory
def make_data(kind: str, n: int, p: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic synthetic data: every tool and process sees the same arrays for a seed."""
    rng = np.random.default_rng([seed, n, p])
    X = rng.standard_normal((n, p))
    if kind == "logit":
        beta = rng.normal(0.0, 0.3, p)
        eta = 0.2 + X @ beta
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    elif kind == "pois":
        beta = rng.normal(0.0, 0.1, p)
        y = rng.poisson(np.exp(0.3 + X @ beta)).astype(np.int64)
    else:
        beta = rng.normal(0.0, 1.0, p)
        y = 0.5 + X @ beta + 2.0 * rng.standard_normal(n)
    return {"X": X, "y": y}


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak RSS increase (MB) over a block: VmHWM reset via clear_refs, else getrusage."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.mb = float("nan")

    def __enter__(self):
        if not self.enabled:
            return self
        gc.collect()
        self.base = _status_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.exact = self.base is not None
        except OSError:
            self.exact = False
        if not self.exact:
            self.base = self.base or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        peak = _status_kb("VmHWM") if self.exact else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mb = max(peak - self.base, 0) / 1024.0
        return False


# --------------------------------------------------------------------------------- the tools
class Tool:
    """One competitor: ``prepare`` (untimed: bind the data) then ``run`` (timed)."""

    has_se = True

    def __init__(self, kind: str, shared: dict):
        self.kind = kind
        self.shared = shared

    def prepare(self, data):
        self.data = data

    def run(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Fit; return (coefficients, standard errors or None)."""
        raise NotImplementedError


def build_model(kind: str, X, y, *, y_data: bool):
    """The case's model, written as users write it: ``pm.Data("X", X)``, and ``y`` in a
    ``pm.Data("y_obs")`` container (``y_data``) or as the NumPy array itself."""
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as m:
        Xd = pm.Data("X", X)
        if y_data:
            y = pm.Data("y_obs", y)
        alpha = pm.Flat("alpha")
        beta = pm.Flat("beta", shape=X.shape[1])
        eta = alpha + Xd @ beta
        if kind == "logit":
            pm.Bernoulli("y", logit_p=eta, observed=y)
        elif kind == "pois":
            pm.Poisson("y", mu=pt.exp(eta), observed=y)
        else:
            sigma = pm.HalfFlat("sigma")
            pm.Normal("y", mu=eta, sigma=sigma, observed=y)
    return m


def _pm_model(kind: str, data, shared: dict):
    """The one pm.Model of a case with y in ``pm.Data`` (shared by mle-ppl and find_MAP)."""
    if "model" not in shared:

        shared["model"] = build_model(kind, data["X"], data["y"], y_data=True)
    return shared["model"]


class PymcTool(Tool):
    def prepare(self, data):
        import pymc as pm

        self.data = data
        self.model = _pm_model(self.kind, data, self.shared)
        pm.set_data({"X": data["X"], "y_obs": data["y"]}, model=self.model)


class MlePpl(PymcTool):
    def run(self):
        import mle_ppl
        from mle_ppl._src.engine import likelihood as lik_mod

        before = lik_mod.COMPILE_COUNT
        fit = mle_ppl.fit(self.model)
        self.shared["compiles"] = self.shared.get("compiles", 0) + lik_mod.COMPILE_COUNT - before
        se = fit.std_errors
        est = fit.estimates
        names = ["alpha"] + [f"beta[{i}]" for i in range(self.data["X"].shape[1])]
        self.last = {"converged": bool(fit.converged), "iterations": int(fit.iterations),
                     "n_evals": int(fit.n_evals), "warnings": list(fit.warnings)}
        return est[names].to_numpy(), se[names].to_numpy()


class MlePplNumpyY(MlePpl):
    """y passed as a NumPy array (``observed=y``): a new model per data set, compiled in
    ``prepare`` (untimed; from the on-disk cache after the warm-up), then the fit is timed."""

    def prepare(self, data):
        from mle_ppl._src.engine.likelihood import likelihood_for

        self.data = data
        self.model = build_model(self.kind, data["X"], data["y"], y_data=False)
        likelihood_for(self.model).compile_all()

    def run(self):
        import mle_ppl

        fit = mle_ppl.fit(self.model)
        names = ["alpha"] + [f"beta[{i}]" for i in range(self.data["X"].shape[1])]
        self.last = {"converged": bool(fit.converged), "iterations": int(fit.iterations),
                     "n_evals": int(fit.n_evals), "warnings": list(fit.warnings)}
        return fit.estimates[names].to_numpy(), fit.std_errors[names].to_numpy()


class FindMap(PymcTool):
    compute_hessian = False
    has_se = False

    def run(self):
        import pymc as pm

        out = pm.find_MAP(model=self.model, progressbar=False, jitter=False,
                          return_inferencedata=True, compute_hessian=self.compute_hessian)
        post = out["posterior"]
        beta = np.asarray(post["beta"]).reshape(-1)
        coef = np.concatenate([np.asarray(post["alpha"]).reshape(-1), beta])
        se = None
        if self.compute_hessian:
            fitg = out["fit"]
            rows = [str(r) for r in fitg["rows"].values]
            cov = np.asarray(fitg["covariance_matrix"])
            want = ["alpha"] + [f"beta[{i}]" for i in range(len(beta))]
            idx = [rows.index(w) for w in want]
            se = np.sqrt(np.diag(cov)[idx])
        res = out["optimizer_result"]
        self.last = {"converged": bool(res["success"]), "iterations": int(res["nit"]),
                     "message": str(res["message"].values)}
        return coef, se


class FindMapSE(FindMap):
    compute_hessian = True
    has_se = True


class Statsmodels(Tool):
    def run(self):
        import statsmodels.api as sm

        X, y = self.data["X"], self.data["y"]
        if self.kind == "logit":
            res = sm.Logit(y, sm.add_constant(X, prepend=True)).fit(disp=0)
            return np.asarray(res.params), np.asarray(res.bse)
        if self.kind == "pois":
            res = sm.GLM(y, sm.add_constant(X, prepend=True),
                         family=sm.families.Poisson()).fit()
            return np.asarray(res.params), np.asarray(res.bse)
        res = sm.OLS(y, sm.add_constant(X, prepend=True)).fit()
        n, k = len(y), X.shape[1] + 1
        # statsmodels' bse uses RSS/(n-k); the MLE's uses RSS/n
        return np.asarray(res.params), np.asarray(res.bse) * np.sqrt((n - k) / n)


class SklearnLogit(Tool):
    has_se = False
    solver = "lbfgs"
    tol = 1e-4  # scikit-learn's default

    def run(self):
        from sklearn.linear_model import LogisticRegression

        # C=np.inf is scikit-learn's unpenalised logistic regression (penalty=None deprecated)
        est = LogisticRegression(C=np.inf, solver=self.solver, max_iter=10_000, tol=self.tol)
        est.fit(self.data["X"], self.data["y"])
        self.last = {"iterations": int(np.max(est.n_iter_))}
        return np.concatenate([est.intercept_, est.coef_.ravel()]), None


class SklearnLogitNC(SklearnLogit):
    solver = "newton-cholesky"


class SklearnLogitTight(SklearnLogit):
    """lbfgs asked for a tight optimum (the issue's tol=1e-8), still no standard errors."""

    tol = 1e-8


class SklearnLogitNCTight(SklearnLogitNC):
    tol = 1e-10


class SklearnPoisson(Tool):
    has_se = False

    def run(self):
        from sklearn.linear_model import PoissonRegressor

        est = PoissonRegressor(alpha=0.0, max_iter=10_000, tol=1e-8)
        est.fit(self.data["X"], self.data["y"])
        self.last = {"iterations": int(est.n_iter_)}
        return np.concatenate([[est.intercept_], est.coef_]), None


class SklearnLinear(Tool):
    has_se = False

    def run(self):
        from sklearn.linear_model import LinearRegression

        est = LinearRegression().fit(self.data["X"], self.data["y"])
        return np.concatenate([[est.intercept_], est.coef_]), None


class NumpyLstsq(Tool):
    def prepare(self, data):
        self.data = data
        self.X1 = np.column_stack([np.ones(len(data["y"])), data["X"]])

    def run(self):
        X1, y = self.X1, self.data["y"]
        coef, rss, _, _ = np.linalg.lstsq(X1, y, rcond=None)
        sigma2 = float(rss[0]) / len(y)
        se = np.sqrt(np.diag(np.linalg.inv(X1.T @ X1)) * sigma2)
        return coef, se


TOOL_CLASSES = {
    "mle_ppl": MlePpl, "mle_ppl_numpy_y": MlePplNumpyY, "sklearn_poisson": SklearnPoisson,
    "statsmodels": Statsmodels, "sklearn_lbfgs": SklearnLogit,
    "sklearn_newton_cholesky": SklearnLogitNC, "sklearn_lbfgs_tight": SklearnLogitTight,
    "sklearn_newton_cholesky_tight": SklearnLogitNCTight, "sklearn": SklearnLinear,
    "numpy_lstsq": NumpyLstsq, "find_map_se": FindMapSE, "find_map": FindMap,
}


# ---------------------------------------------------------------------------- the case worker
def run_case(case: str, repeats: int, memory: bool = False) -> dict:
    """Fit one case with every tool: warm-up, then ``repeats`` round-robin rounds.

    With ``memory=True`` (a separate process started with a fixed glibc mmap threshold, so that
    freed large arrays leave the RSS) it records the peak RSS increase of each fit instead of
    relying on its times.
    """
    kind, n, p = CASES[case]
    shared: dict = {}
    names = TOOLS[kind]
    tools = {name: TOOL_CLASSES[name](kind, shared) for name in names}
    out = {name: {"times": [], "rss_mb": [], "coef_diff": [], "se_diff": [], "warnings": set(),
                  "info": None} for name in names}
    loadavg = [os.getloadavg()[0]]

    def one(name, data):
        tool = tools[name]
        tool.prepare(data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with PeakRSS(enabled=memory) as mem:
                t0 = time.perf_counter()
                coef, se = tool.run()
                dt = time.perf_counter() - t0
        for w in caught:
            out[name]["warnings"].add(f"{w.category.__name__}: {str(w.message).splitlines()[0]}")
        out[name]["info"] = getattr(tool, "last", None)
        return dt, mem.mb, coef, se

    # warm-up data set (mle-ppl compiles here; first-call overheads of the others go here too)
    warm = make_data(kind, n, p, seed=10_000)
    t_first = {}
    for name in names:
        dt, _, _, _ = one(name, warm)
        t_first[name] = dt
    del warm
    shared["compiles"] = 0  # mle-ppl's (pm.Data model) compilations after the warm-up
    for k in range(repeats):
        data = make_data(kind, n, p, seed=k)
        results = {}
        for name in names:
            dt, mb, coef, se = one(name, data)
            out[name]["times"].append(dt)
            out[name]["rss_mb"].append(mb)
            results[name] = (coef, se)
        ref_coef, ref_se = results["statsmodels"]
        for name, (coef, se) in results.items():
            out[name]["coef_diff"].append(float(np.max(np.abs(coef - ref_coef))))
            if se is not None:
                out[name]["se_diff"].append(float(np.max(np.abs(se - ref_se))))
        del data, results
        gc.collect()
        loadavg.append(os.getloadavg()[0])
    recompiles = shared["compiles"]
    for name in names:
        out[name]["warnings"] = sorted(out[name]["warnings"])
        out[name]["first_call_s"] = t_first[name]
    return {"case": case, "kind": kind, "n": n, "p": p, "repeats": repeats,
            "x_mb": n * p * 8 / 2**20,
            "mle_ppl_recompiles": recompiles, "loadavg_1min": loadavg, "tools": out}


def spawn_case(case: str, repeats: int, *, memory: bool = False,
               threads: int | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", case, "--repeats", str(repeats)]
    if memory:
        cmd.append("--memory")
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    if memory:
        # glibc otherwise raises its mmap threshold after the first large free and keeps freed
        # arrays on the heap, so a second fit's allocations would not show in the RSS at all
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"case {case} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- cold start
def _wall(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


STATSMODELS_SCRIPT = """
import pandas as pd
import statsmodels.formula.api as smf
d = pd.read_csv({csv!r})
print(smf.logit("y ~ x1 + x2", data=d).fit(disp=0).summary())
"""


def cold(repeats: int) -> dict:
    """Fresh processes, round-robin (each round runs every command once), medians.

    ``mle-ppl fit logistic_regression`` against a script that reads the same CSV, fits
    ``statsmodels.formula.api.logit`` and prints its summary: both with their caches warm (one
    untimed run first: PyTensor's/Numba's and mle-ppl's compiled-function cache, the OS file
    cache), and mle-ppl once more with its compiled-function cache off (``MLE_PPL_CACHE=0``).
    """
    py = sys.executable
    csv = os.path.join(os.path.dirname(HERE), "models", "data", "logistic_regression.csv")
    if not os.path.exists(csv):
        csv = os.path.join(os.path.dirname(HERE), "mle_ppl", "models", "data",
                           "logistic_regression.csv")
    cli = os.path.join(os.path.dirname(py), "mle-ppl")
    cli_cmd = [cli, "fit", "logistic_regression"] if os.path.exists(cli) else [
        py, "-m", "mle_ppl", "fit", "logistic_regression"]
    cmds = {
        "python -c pass": [py, "-c", "pass"],
        "import numpy": [py, "-c", "import numpy"],
        "import pandas": [py, "-c", "import pandas"],
        "import pytensor.tensor": [py, "-c", "import pytensor.tensor"],
        "import pymc": [py, "-c", "import pymc"],
        "import mle_ppl": [py, "-c", "import mle_ppl"],
        "import + fit small model": [py, "-c", COLD_SCRIPT],
        "mle-ppl models": cli_cmd[:-2] + ["models"],
        "mle-ppl --help": cli_cmd[:-2] + ["--help"],
        "mle-ppl fit logistic_regression": cli_cmd,
        "mle-ppl fit logistic_regression --json": cli_cmd + ["--json"],
        "mle-ppl fit logistic_regression (MLE_PPL_CACHE=0)": cli_cmd,
        "statsmodels formula logit script": [py, "-c", STATSMODELS_SCRIPT.format(csv=csv)],
    }
    no_cache = dict(os.environ, MLE_PPL_CACHE="0")

    def env_for(key):
        return no_cache if "MLE_PPL_CACHE=0" in key else None

    for key, cmd in cmds.items():  # warm every cache once
        _wall(cmd, env_for(key))
    times: dict = {key: [] for key in cmds}
    for _ in range(repeats):
        for key, cmd in cmds.items():
            times[key].append(_wall(cmd, env_for(key)))
    return {key: {"median": statistics.median(t), "min": min(t), "times": t}
            for key, t in times.items()}


# ----------------------------------------------------------------------------------- report
def header() -> dict:
    import threadpoolctl

    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    for mod in ("numpy", "scipy", "pytensor", "pymc", "statsmodels", "sklearn"):
        info[mod] = __import__(mod).__version__
    import mle_ppl

    info["mle_ppl"] = mle_ppl.__version__
    from mle_ppl._src.engine.likelihood import DEFAULT_MODE, SMALL_DATA, SMALL_MODE

    # "auto": the Python VM for data of <= SMALL_DATA elements (the cold small model), Numba above
    info["mle_ppl_mode"] = f"{DEFAULT_MODE} (<= {SMALL_DATA} data elements: {SMALL_MODE})"
    import pytensor
    from pytensor.compile.mode import get_mode

    info["mle_ppl_linker"] = (f"{type(get_mode('FAST_RUN').linker).__name__}; small data: "
                              f"{type(get_mode(SMALL_MODE).linker).__name__}")
    info["pytensor_default_linker"] = type(get_mode(None).linker).__name__

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info["pytensor_blas_ldflags"] = pytensor.config.blas__ldflags
    info["env"] = {k: os.environ.get(k) for k in (
        "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    info["threadpools"] = [
        {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture",
                               "threading_layer")} | {"lib": os.path.basename(d["filepath"])}
        for d in threadpoolctl.threadpool_info()]
    return info


def fmt_header(h: dict) -> str:
    lines = [
        f"python {h['python']} on {h['platform']}, {h['cpus']} CPUs, "
        f"load average at start {', '.join(f'{x:.2f}' for x in h['loadavg'])}",
        "versions: " + ", ".join(f"{m} {h[m]}" for m in (
            "mle_ppl", "numpy", "scipy", "pytensor", "pymc", "statsmodels", "sklearn")),
        f"mle-ppl PyTensor mode: {h['mle_ppl_mode']} (linker {h.get('mle_ppl_linker', '?')}); "
        f"PyTensor default linker (find_MAP): {h.get('pytensor_default_linker', '?')}; "
        f"blas__ldflags (C linker only): {h['pytensor_blas_ldflags']!r}",
        "env: " + ", ".join(f"{k}={v}" for k, v in h["env"].items())
        + f"; BLAS threads limited by this script to: {h.get('threads_limit') or 'no limit'}",
        "threadpoolctl.threadpool_info():",
    ]
    for t in h["threadpools"]:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in t.items()))
    return "\n".join(lines)


def summarise(case_res: dict, mem_res: dict | None = None) -> list[dict]:
    tools = case_res["tools"]
    t_mle = statistics.median(tools["mle_ppl"]["times"])
    rows = []
    for name, r in tools.items():
        med = statistics.median(r["times"])
        rows.append({
            "case": case_res["case"], "tool": name, "median_s": med, "min_s": min(r["times"]),
            "ratio": t_mle / med if med > 0 else float("nan"),
            "coef_diff": max(r["coef_diff"]) if r["coef_diff"] else float("nan"),
            "se_diff": max(r["se_diff"]) if r["se_diff"] else None,
            "rss_mb": max(mem_res["tools"][name]["rss_mb"]) if mem_res else None,
            "x_mb": case_res.get("x_mb"),
            "first_call_s": r["first_call_s"],
            "warnings": r["warnings"], "info": r["info"],
        })
    return rows


def _cells(r: dict) -> list[str]:
    return [
        LABELS[r["tool"]], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}",
        "1 (self)" if r["tool"] == "mle_ppl" else f"{r['ratio']:.2f}x",
        f"{r['coef_diff']:.1e}", "no SE" if r["se_diff"] is None else f"{r['se_diff']:.1e}",
        "-" if r["rss_mb"] is None else f"{r['rss_mb']:.0f}",
        "-" if r["rss_mb"] is None or not r.get("x_mb") else f"{r['rss_mb'] / r['x_mb']:.2f}",
        f"{r['first_call_s']:.2f}",
    ]


COLUMNS = ("tool", "median s", "min s", "mle/peer", "max Δcoef", "max ΔSE", "peakRSS+MB",
           "peak/X", "1st call s")


def _case_title(case: str) -> str:
    kind, n, p = CASES[case]
    name = {"logit": "logistic", "pois": "poisson", "gauss": "gaussian"}[kind]
    return f"{name} n={n:.0e} p={p}"


def fmt_table(rows: list[dict], cases: dict, markdown: bool = False) -> str:
    out = []
    if markdown:
        out.append("| case | " + " | ".join(COLUMNS) + " |")
        out.append("|" + "---|" * (len(COLUMNS) + 1))
    else:
        widths = (30, 9, 8, 9, 10, 9, 10, 7, 10)
        head = f"{'case':<22} " + " ".join(
            f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(
                zip(COLUMNS, widths, strict=True)))
        out += [head, "-" * len(head)]
    for case, res in cases.items():
        title = _case_title(case)
        for r in (x for x in rows if x["case"] == case):
            cells = _cells(r)
            if markdown:
                out.append(f"| {title} | " + " | ".join(cells) + " |")
            else:
                out.append(f"{title:<22} " + " ".join(
                    f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(
                        zip(cells, widths, strict=True))))
            title = ""
        load = ", ".join(f"{x:.1f}" for x in res.get("loadavg_1min", []))
        note = (f"(repeats {res['repeats']}; mle-ppl recompilations after warm-up: "
                f"{res['mle_ppl_recompiles']}; 1-min load average: {load})")
        if not markdown:
            out.append(f"{'':<22} {note}")
    return "\n".join(out)


def fmt_notes(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        bits = []
        if r["info"]:
            bits.append(", ".join(f"{k}={v}" for k, v in r["info"].items() if k != "warnings"))
        if r["warnings"]:
            bits.append("warnings: " + " | ".join(r["warnings"])[:300])
        if bits:
            lines.append(f"  {r['case']:<10} {LABELS[r['tool']]:<27} " + "; ".join(bits))
    return "\n".join(lines)


def report(data: dict, markdown: bool = False) -> str:
    """The whole report (after the header) from the measurements ``data`` (the --json dict)."""
    rows, cases, cold_res = data["rows"], data["cases"], data.get("cold")
    out = []
    out.append("Warm fits: median wall time over repeats; mle/peer = mle-ppl's median / the "
               "peer's (< 1: mle-ppl faster).")
    out.append("max Δcoef, max ΔSE: largest absolute difference from statsmodels on the same "
               "data. peakRSS+MB: peak RSS increase during one warm fit (separate process, "
               "n = 1e6 only). 1st call s: the warm-up fit (mle-ppl: compiles).")
    out.append("")
    out.append(fmt_table(rows, cases, markdown))
    if markdown:
        out.append("")
        for case, res in cases.items():
            load = ", ".join(f"{x:.1f}" for x in res.get("loadavg_1min", []))
            out.append(f"- {_case_title(case)}: {res['repeats']} repeats, mle-ppl "
                       f"recompilations after warm-up: {res['mle_ppl_recompiles']}, 1-min load "
                       f"average during the case: {load}")
    else:
        out.append("\nPer-tool details (last fit):")
        out.append(fmt_notes(rows))
    if cold_res:
        out.append("")
        out.append("Fresh processes (PyTensor compile cache warm), wall time:")
        out.append("")
        if markdown:
            out += ["| command | median s | min s |", "|---|---|---|"]
        for key, r in cold_res.items():
            out.append(f"| `{key}` | {r['median']:.2f} | {r['min']:.2f} |" if markdown else
                       f"  {key:<26} median {r['median']:6.2f} s   min {r['min']:6.2f} s")
    out.append("")
    out.append("Targets (warm fits, standard errors included; each for y in pm.Data and y as a "
               "NumPy array):")
    out.append("")
    bullet = "- " if markdown else "  "
    for case, peer, limit in TARGETS:
        row = next((r for r in rows if r["case"] == case and r["tool"] == peer), None)
        for mine in ("mle_ppl", "mle_ppl_numpy_y"):
            me = next((r for r in rows if r["case"] == case and r["tool"] == mine), None)
            what = f"{_case_title(case)}: {LABELS[mine]} / {LABELS[peer]}"
            if row is None or me is None:
                out.append(f"{bullet}{what} <= {limit:.1f}x: not measured")
                continue
            ratio = me["median_s"] / row["median_s"]
            out.append(f"{bullet}{what} = {ratio:.2f}x (target <= {limit:.1f}x): "
                       f"{'MET' if ratio <= limit else 'NOT MET'}")
    for r in rows:
        if r["tool"] == "mle_ppl" and r["rss_mb"] is not None and r.get("x_mb"):
            ratio = r["rss_mb"] / r["x_mb"]
            out.append(f"{bullet}{_case_title(r['case'])}: peak extra memory / size of X = "
                       f"{ratio:.2f} (target <= {MEMORY_TARGET}): "
                       f"{'MET' if ratio <= MEMORY_TARGET else 'NOT MET'}")
    if cold_res and "mle-ppl fit logistic_regression" in cold_res:
        t = cold_res["mle-ppl fit logistic_regression"]["median"]
        ref = cold_res["statsmodels formula logit script"]["median"]
        out.append(f"{bullet}cold `mle-ppl fit logistic_regression` / statsmodels script = "
                   f"{t:.2f} s / {ref:.2f} s = {t / ref:.2f}x (target <= {COLD_CLI_TARGET}x, goal "
                   f"0.7x): {'MET' if t / ref <= COLD_CLI_TARGET else 'NOT MET'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="only logistic n=1e4 and 1e5, 2 repeats, 2 cold runs (smoke test)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats per case and cold-start command (default 5; quick: 2)")
    ap.add_argument("--json", metavar="FILE", help="also write all measurements as JSON")
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), help="run only these cases")
    ap.add_argument("--no-cold", action="store_true", help="skip the fresh-process timings")
    ap.add_argument("--cold-only", action="store_true",
                    help="only the fresh-process timings (no fit cases)")
    ap.add_argument("--no-memory", action="store_true",
                    help="skip the peak-RSS pass of the n = 1e6 cases")
    ap.add_argument("--threads", type=int, default=None,
                    help="limit BLAS/OpenMP threads of every tool (threadpoolctl) in the case "
                         "workers; default: leave the environment's setting")
    ap.add_argument("--from-json", metavar="FILE",
                    help="re-print the report of a saved --json file instead of measuring")
    ap.add_argument("--markdown", action="store_true",
                    help="with --from-json: print the tables as Markdown")
    ap.add_argument("--worker", metavar="CASE", help=argparse.SUPPRESS)
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        ap.error("--repeats must be >= 1")

    if args.from_json:
        with open(args.from_json) as fh:
            data = json.load(fh)
        print(fmt_header(data["header"]))
        print()
        print(report(data, markdown=args.markdown))
        return 0

    if args.worker:
        if args.threads:
            import threadpoolctl

            threadpoolctl.threadpool_limits(limits=args.threads)
        print(json.dumps(run_case(args.worker, repeats, memory=args.memory)))
        return 0

    h = header()
    h["threads_limit"] = args.threads
    print(fmt_header(h), flush=True)
    case_names = () if args.cold_only else (
        args.cases or (QUICK_CASES if args.quick else tuple(CASES)))
    cases = {}
    memory = {}
    for case in case_names:
        t0 = time.perf_counter()
        cases[case] = spawn_case(case, repeats, threads=args.threads)
        print(f"  ... {case} timed in {time.perf_counter() - t0:.0f} s", flush=True)
        if CASES[case][1] >= 1_000_000 and not args.no_memory:
            t0 = time.perf_counter()
            memory[case] = spawn_case(case, 1, memory=True, threads=args.threads)
            print(f"  ... {case} memory pass in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = [r for c in cases.values() for r in summarise(c, memory.get(c["case"]))]
    cold_res = None
    if not args.no_cold:
        t0 = time.perf_counter()
        cold_res = cold(repeats)
        print(f"  ... fresh-process timings in {time.perf_counter() - t0:.0f} s", flush=True)
    data = {"header": h, "cases": cases, "rows": rows, "cold": cold_res}
    print()
    print(report(data))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
