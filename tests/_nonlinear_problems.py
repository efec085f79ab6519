"""Hard nonlinear least-squares problems as Gaussian likelihoods, with high-precision references.

Each problem is a published model function (NIST StRD nonlinear regression: Misra1a, Thurber,
BoxBOD, MGH09, MGH10, Eckerle4, Bennett5, Rat42, Rat43, Lanczos; and a Filip-like degree-10
polynomial), the x grid of the published problem (or one spanning the same range), and data made
here: ``y = f(x, b*) + noise`` with a fixed seed, ``b*`` the published certified values and a
noise level like the published residual standard deviation. The certified values of the
published data sets therefore do not apply; the reference optimum of *these* data is computed
independently by :func:`compute_reference` in 80-digit arithmetic (mpmath): Newton's method on
the residual sum of squares, with derivatives by high-precision central differences, started at
a float64 Levenberg-Marquardt solution, and checked for a vanishing gradient and a positive
definite Hessian. ``nonlinear_reference.json`` stores the results with a hash of the data.

Each model function is written once, ``f(x, b, ops)``, and evaluated with ``ops`` = NumPy
(data), PyTensor (the PyMC model, written as a user would) or mpmath (the reference).
Starts: the published "start 1" (far) and "start 2" (near), and extra starts where a problem has
a known trap (two equal rates in a sum of exponentials).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Problem:
    name: str
    f: object  #: f(x, b, ops) -> mean; b is a sequence of scalars
    x: np.ndarray
    b_star: tuple[float, ...]  #: published certified values, used to make the data
    noise: float  #: standard deviation of the Gaussian noise added to f(x, b*)
    starts: dict[str, tuple[float, ...]]
    seed: int
    note: str = ""
    linear: bool = False
    y: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        y = self.f(self.x, self.b_star, np) + self.noise * rng.standard_normal(self.x.size)
        object.__setattr__(self, "y", np.asarray(y, dtype=float))

    @property
    def p(self) -> int:
        return len(self.b_star)

    @property
    def names(self) -> list[str]:
        return [f"b{i + 1}" for i in range(self.p)]


def _misra1a(x, b, o):
    return b[0] * (1 - o.exp(-b[1] * x))


def _thurber(x, b, o):
    return ((b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3)
            / (1 + b[4] * x + b[5] * x**2 + b[6] * x**3))


def _mgh09(x, b, o):
    return b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3])


def _mgh10(x, b, o):
    return b[0] * o.exp(b[1] / (x + b[2]))


def _eckerle4(x, b, o):
    return (b[0] / b[1]) * o.exp(-0.5 * ((x - b[2]) / b[1]) ** 2)


def _bennett5(x, b, o):
    return b[0] * (b[1] + x) ** (-1 / b[2])


def _rat42(x, b, o):
    return b[0] / (1 + o.exp(b[1] - b[2] * x))


def _rat43(x, b, o):
    return b[0] / (1 + o.exp(b[1] - b[2] * x)) ** (1 / b[3])


def _lanczos(x, b, o):
    return b[0] * o.exp(-b[1] * x) + b[2] * o.exp(-b[3] * x) + b[4] * o.exp(-b[5] * x)


def _poly10(x, b, o):
    out = b[0]
    for k in range(1, 11):
        out = out + b[k] * x**k
    return out


FILIP_B = (-1467.48961422980, -2772.17959193342, -2316.37108160893, -1127.97394098372,
           -354.478233703349, -75.1242017393757, -10.8753180355343, -1.06221498588947,
           -0.670191154593408e-01, -0.246781078275479e-02, -0.402962525080404e-04)

PROBLEMS: tuple[Problem, ...] = (
    Problem("Misra1a", _misra1a,
            np.array([77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8, 378.4, 434.8, 477.3,
                      536.8, 593.1, 689.1, 760.0]),
            (2.3894212918e02, 5.5015643181e-04), 0.1,
            {"start1": (500.0, 1e-4), "start2": (250.0, 5e-4)}, seed=1),
    Problem("Thurber", _thurber, np.linspace(-3.067, 2.2, 37),
            (1.2881396800e03, 1.4910792535e03, 5.8323836877e02, 7.5416644291e01,
             9.6629502864e-01, 3.9797285797e-01, 4.9727297349e-02), 13.0,
            {"start1": (1000, 1000, 400, 40, 0.7, 0.3, 0.03),
             "start2": (1300, 1500, 500, 75, 1, 0.4, 0.05)}, seed=2),
    Problem("BoxBOD", _misra1a, np.array([1.0, 2, 3, 5, 7, 10]),
            (2.1380940889e02, 5.4723748542e-01), 17.0,
            {"start1": (1.0, 1.0), "start2": (100.0, 0.75)}, seed=3),
    Problem("MGH09", _mgh09,
            np.array([4, 2, 1, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625]),
            (1.9280693458e-01, 1.9128232873e-01, 1.2305650693e-01, 1.3606233068e-01), 0.0066,
            {"start1": (25, 39, 41.5, 39), "start2": (0.25, 0.39, 0.415, 0.39)}, seed=4),
    Problem("MGH10", _mgh10, np.arange(50.0, 126.0, 5.0),
            (5.6096364710e-03, 6.1813463463e03, 3.4522363462e02), 6.0,
            {"start1": (2, 400000, 25000), "start2": (0.02, 4000, 250)}, seed=5),
    Problem("Eckerle4", _eckerle4, np.arange(400.0, 500.1, 2.5),
            (1.5543827178, 4.0888321754, 4.5154121844e02), 0.0067,
            {"start1": (1, 10, 500), "start2": (1.5, 5, 450)}, seed=6),
    Problem("Bennett5", _bennett5, np.linspace(7.447168, 11.989350, 154),
            (-2.5235058043e03, 4.6736564644e01, 9.3218483193e-01), 0.0018,
            {"start1": (-2000, 50, 0.8), "start2": (-1500, 45, 0.85)}, seed=7),
    Problem("Rat42", _rat42, np.array([9.0, 14, 21, 28, 42, 57, 63, 70, 79]),
            (7.2462237576e01, 2.6180768402, 6.7359200066e-02), 1.1,
            {"start1": (100, 1, 0.1), "start2": (75, 2.5, 0.07)}, seed=8),
    Problem("Rat43", _rat43, np.arange(1.0, 16.0),
            (6.9964151270e02, 5.2771253025, 7.5962938329e-01, 1.2792483859), 10.0,
            {"start1": (100, 10, 1, 1), "start2": (700, 5, 0.75, 1.3)}, seed=9),
    Problem("Lanczos", _lanczos, np.arange(24) * 0.05,
            (8.6816414977e-02, 9.5498101505e-01, 8.4400777463e-01, 2.9515951832,
             1.5825685901, 4.9863565084), 1e-5,
            {"start1": (1.2, 0.3, 5.6, 5.5, 6.5, 7.6), "start2": (0.5, 0.7, 3.6, 4.2, 4, 6.3),
             # two rates equal: the exponentials are interchangeable there (a saddle family)
             "tie": (0.5, 0.7, 1.0, 4.0, 1.0, 4.0)}, seed=10,
            note="sum of three exponentials"),
    Problem("Lanczos1", _lanczos, np.arange(24) * 0.05,
            (9.5100000027e-02, 1.0000000001, 8.6070000013e-01, 3.0000000002, 1.5575999998,
             5.0000000001), 1e-13,
            {"start1": (1.2, 0.3, 5.6, 5.5, 6.5, 7.6), "start2": (0.5, 0.7, 3.6, 4.2, 4, 6.3)},
            seed=21, note="exact data (residuals ~1e-13): the fit ends at the rounding floor"),
    Problem("Poly10", _poly10, np.linspace(-8.78, -3.13, 82), FILIP_B, 0.0034,
            {"default": (0.0,) * 11, "near": tuple(1.1 * b for b in FILIP_B)}, seed=11,
            note="degree-10 polynomial, cond(X'X) > 1e15", linear=True),
)


BY_NAME = {p.name: p for p in PROBLEMS}
CASES = [(p.name, s) for p in PROBLEMS for s in p.starts]


def pymc_model(problem: Problem):
    """The Gaussian model with flat priors, written as a user would."""
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as m:
        x = pm.Data("x", problem.x)
        b = [pm.Flat(name) for name in problem.names]
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu=problem.f(x, b, pt), sigma=sigma, observed=problem.y)
    return m


@dataclass(frozen=True)
class Reference:
    b: tuple[float, ...]
    sigma: float  #: MLE sqrt(RSS/n)
    rss: float
    grad_rel: float  #: |gradient of RSS| relative, at the reference (mpmath)
    hess_min_eig: float  #: of the scaled Hessian of RSS (must be > 0: a strict minimum)


REFERENCE_FILE = Path(__file__).with_name("nonlinear_reference.json")


def data_hash(problem: Problem) -> str:
    return hashlib.sha256(np.ascontiguousarray(problem.y, dtype="<f8").tobytes()).hexdigest()


@functools.cache
def reference(name: str) -> Reference:
    """The stored reference of ``name`` (``nonlinear_reference.json``, written by running this
    module), recomputed when the data no longer hash to the stored value."""
    stored = json.loads(REFERENCE_FILE.read_text()) if REFERENCE_FILE.exists() else {}
    entry = stored.get(name)
    if entry is not None and entry["data_sha256"] == data_hash(BY_NAME[name]):
        return Reference(**entry["reference"])
    return compute_reference(name)


def compute_reference(name: str, dps: int = 80) -> Reference:
    """The least-squares optimum of the problem's data in ``dps``-digit arithmetic (Newton).

    Central differences with a relative step of 1e-32 (gradient) and 1e-12 (Hessian, on that
    gradient) at 80 digits: truncation ~1e-64 and rounding ~1e-48 relative, so the optimum is
    right to ~1e-25 even at a scaled condition number of 1e20. Newton's method while its step is
    above 1e-8 relative, then the chord method with the last Hessian (each step gains ~8 digits),
    until the step is below 1e-22 relative."""
    import mpmath as mpm

    prob = BY_NAME[name]
    ctx = mpm.MPContext()
    ctx.dps = dps
    xs = [ctx.mpf(float(v)) for v in prob.x]
    ys = [ctx.mpf(float(v)) for v in prob.y]
    p = prob.p

    tiny = ctx.mpf(10) ** -32

    def rss(b):
        return ctx.fsum((yi - prob.f(xi, b, ctx)) ** 2 for xi, yi in zip(xs, ys, strict=True))

    def grad(b, h_rel):
        out = []
        for j in range(p):
            h = h_rel * max(abs(b[j]), ctx.mpf(1e-3))
            bp, bm = list(b), list(b)
            bp[j] += h
            bm[j] -= h
            out.append((rss(bp) - rss(bm)) / (2 * h))
        return out

    def hess(b):
        H = ctx.matrix(p, p)
        for j in range(p):
            h = ctx.mpf(10) ** (-12) * max(abs(b[j]), ctx.mpf(1e-3))
            bp, bm = list(b), list(b)
            bp[j] += h
            bm[j] -= h
            gp, gm = grad(bp, tiny), grad(bm, tiny)
            for i in range(p):
                H[i, j] = (gp[i] - gm[i]) / (2 * h)
        return (H + H.T) / 2

    # a float64 start near the optimum (Levenberg-Marquardt from b*); the optimum itself comes
    # from the 80-digit Newton below and is checked by its gradient and Hessian
    from scipy.optimize import least_squares

    b0 = least_squares(lambda c: prob.y - prob.f(prob.x, c, np), prob.b_star, method="lm",
                       xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=100000).x
    b = [ctx.mpf(float(v)) for v in b0]
    f = rss(b)
    H = None
    last = None
    for _ in range(200):
        g = grad(b, tiny)
        if last is None or last > 1e-8:
            H = hess(b)  # Newton while far; then the chord method with this Hessian
        lam = 0
        while True:  # Levenberg-damped Newton step that lowers the RSS
            Hl = H + lam * ctx.diag([H[i, i] for i in range(p)])
            step = ctx.lu_solve(Hl, ctx.matrix(g))
            cand = [bj - step[j] for j, bj in enumerate(b)]
            fc = rss(cand)
            if fc <= f * (1 + ctx.mpf(10) ** -(dps - 10)):
                break
            lam = 1e-15 if lam == 0 else 10 * lam
        b, f = cand, fc

        last = max(abs(step[j]) / max(abs(b[j]), ctx.mpf(1e-30)) for j in range(p))
        if last < ctx.mpf(10) ** -22 and (lam == 0 or last < ctx.mpf(10) ** -40):
            break
    else:
        raise RuntimeError(f"reference Newton for {name} did not converge (last step {last})")
    g = grad(b, tiny)
    H = hess(b)
    # scaled Hessian (unit diagonal) must be positive definite: a strict local minimum
    d = [1 / ctx.sqrt(abs(H[i, i])) for i in range(p)]
    Hs = ctx.matrix(p, p)
    for i in range(p):
        for j in range(p):
            Hs[i, j] = d[i] * H[i, j] * d[j]
    ev = ctx.eigsy(Hs)[0]
    min_eig = float(min(ev[i] for i in range(p)))
    r = rss(b)
    gscale = [abs(g[j]) * abs(b[j]) / max(r, tiny) for j in range(p)]
    n = len(xs)
    return Reference(tuple(float(v) for v in b), float(ctx.sqrt(r / n)), float(r),
                     float(max(gscale)), min_eig)


def digits(estimate, ref) -> float:
    """Log relative error: the number of correct significant digits (capped at 15)."""
    estimate = np.asarray(estimate, dtype=float)
    ref = np.asarray(ref, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(estimate - ref) / np.abs(ref)
    rel = np.where(np.isfinite(rel), rel, np.inf)
    lre = -np.log10(np.maximum(rel, 1e-15))
    return float(np.min(lre))


if __name__ == "__main__":  # python tests/_nonlinear_problems.py: (re)write the reference file
    import dataclasses
    import time

    out = {}
    for prob in PROBLEMS:
        t0 = time.perf_counter()
        ref = compute_reference(prob.name)
        out[prob.name] = {"data_sha256": data_hash(prob), "reference": dataclasses.asdict(ref)}
        print(f"{prob.name}: {time.perf_counter() - t0:.1f} s, sigma {ref.sigma:.6g}, "
              f"min scaled eigenvalue {ref.hess_min_eig:.3g}")
    REFERENCE_FILE.write_text(json.dumps(out, indent=1) + "\n")
