"""Generate the tutorial notebooks from the cell sources below (outputs stripped).

The notebooks are written from this script so that changes are reviewed as plain Python and
the committed ``.ipynb`` files carry no outputs. ``tests/test_notebooks.py`` executes every
notebook in a real Jupyter kernel and fails on any error, and on any output to stderr.

Usage::

    python notebooks/_build.py            # rewrite notebooks/*.ipynb
    python notebooks/_build.py --check    # exit 1 if a notebook differs from this script
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

# Shared first code cell: quiet, deterministic, inline figures.
SETUP = """\
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import mle_ppl

%matplotlib inline
plt.ioff()  # figures appear where a cell returns them, once
pd.set_option("display.precision", 6)
rng = np.random.default_rng(20240611)  # every random number below comes from this seed"""


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


# ------------------------------------------------------------------------------------ 01
NB01 = [
    md("""
# 1. Maximum likelihood is least squares

For a Gaussian likelihood with a mean linear in the parameters,

$$y_i \\sim \\mathcal N(\\alpha + x_i^\\top\\beta,\\ \\sigma^2),\\qquad
-\\log L(\\alpha,\\beta,\\sigma) = \\frac n2\\log(2\\pi\\sigma^2)
 + \\frac{1}{2\\sigma^2}\\sum_i (y_i-\\alpha-x_i^\\top\\beta)^2 ,$$

so for any fixed $\\sigma$ the MLE of $(\\alpha,\\beta)$ minimises the residual sum of squares:
it **is** the least-squares solution. Setting the derivative in $\\sigma$ to zero gives
$\\hat\\sigma^2 = \\mathrm{RSS}/n$, the mean squared error (MSE) at the optimum, and the maximised
log-likelihood is $-\\tfrac n2\\,(\\log(2\\pi\\,\\mathrm{MSE}) + 1)$.

This notebook writes that model as a model file, fits it with `mle_ppl.fit`, and checks each
of these identities against a least-squares solution computed independently with NumPy.
"""),
    code(SETUP),
    md("""
## A model file and some data

A model file declares the likelihood $p(y \\mid x;\\theta)$: which columns are data, which names
are parameters (flat on their support), and the distribution of the outcome. We write it to a
`.toml` file and load it (notebook 4 explains every key).
"""),
    code('''
import tempfile
from pathlib import Path

MODEL = """
[model]
name = "line"
description = "y = alpha + beta x + Gaussian noise"

[data]
y = "y"
x = "x"

[parameters]
alpha = {}
beta = {}
sigma = { lower = 0 }

[likelihood]
y = { distribution = "Normal", mu = "alpha + beta * x", sigma = "sigma" }
"""
path = Path(tempfile.mkdtemp(prefix="mle_ppl_nb1_")) / "line.toml"
path.write_text(MODEL)
model = mle_ppl.load_model(path)

n = 40
x = rng.uniform(0, 10, size=n)
y = 1.5 + 0.8 * x + rng.normal(0, 1.2, size=n)
data = pd.DataFrame({"x": x, "y": y})
data.head()
'''),
    md("## The fit"),
    code('''
fit = mle_ppl.fit(model, data=data)
fit
'''),
    md("""
The standard errors come from the observed information (the inverse Hessian of the negative
log-likelihood at the optimum). `fit.table()` is a DataFrame; `fit.conf_int()` gives Wald
intervals.
"""),
    code("fit.table()"),
    md("""
## The closed-form check

`fit.closed_form()` recognises from the model graph that the likelihood is Gaussian with an
identity link, solves least squares with NumPy (SVD), and sets every quantity beside the MLE
with the tolerance it uses.
"""),
    code('''
check = fit.closed_form()
check
'''),
    md("""
The same numbers by hand: least squares with `numpy.linalg.lstsq`, the MSE, and the
log-likelihood identity.
"""),
    code('''
X = np.column_stack([np.ones(n), x])
coef, rss, *_ = np.linalg.lstsq(X, y, rcond=None)
mse = rss[0] / n
by_hand = pd.DataFrame({
    "MLE": [fit.estimates["alpha"], fit.estimates["beta"], fit.estimates["sigma"] ** 2,
            fit.loglik],
    "least squares": [coef[0], coef[1], mse, -n / 2 * (np.log(2 * np.pi * mse) + 1)],
}, index=["alpha", "beta", "sigma^2 vs MSE = RSS/n", "log-likelihood"])
by_hand["difference"] = by_hand["MLE"] - by_hand["least squares"]
assert check.agrees and np.allclose(by_hand["MLE"], by_hand["least squares"], rtol=1e-8)
by_hand
'''),
    md("""
$\\hat\\sigma^2 = \\mathrm{RSS}/n$ is the MLE; it is biased low. The unbiased
$s^2 = \\mathrm{RSS}/(n-p)$ (what `lm()` reports as the residual variance) is larger by
$n/(n-p)$. Both give the same coefficients.
"""),
    code('''
p = X.shape[1]
print(f"sigma_hat^2 = RSS/n     = {mse:.6f}")
print(f"s^2         = RSS/(n-p) = {rss[0] / (n - p):.6f}   (ratio n/(n-p) = {n / (n - p):.4f})")
'''),
    md("## The data with the fitted line"),
    code('''
fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(x, y, s=18, color="0.35", label="data")
grid = np.linspace(0, 10, 100)
a, b, s = fit.estimates[["alpha", "beta", "sigma"]]
ax.plot(grid, a + b * grid, color="C0", lw=2, label=r"MLE: $\\hat\\alpha + \\hat\\beta x$")
ax.fill_between(grid, a + b * grid - 2 * s, a + b * grid + 2 * s, color="C0", alpha=0.15,
                label=r"$\\pm 2\\hat\\sigma$")
ax.plot(grid, coef[0] + coef[1] * grid, color="C1", ls="--", lw=1.5,
        label="least squares (NumPy)")
ax.set_xlabel("x")
ax.set_ylabel("y")
ax.set_title("Maximum likelihood = least squares")
ax.legend()
fig
'''),
    md("""
## An ill-conditioned design: Longley

The bundled `linear_regression` model is the NIST Longley data: six predictors whose scales
differ by a factor of about $10^6$ and that are almost collinear. Plain gradient methods stall
on it; the exact-Hessian Newton method with scaling reaches the certified least-squares values.
"""),
    code('''
longley = mle_ppl.fit("linear_regression")
longley.closed_form().table()[["mle", "closed_form", "rel_diff", "agrees"]]
'''),
    md("""
The same check from the shell: `mle-ppl check linear_regression` (exit status 0 when every
identity holds), or `mle-ppl fit linear_regression --json` for one JSON document.
"""),
]

# ------------------------------------------------------------------------------------ 02
NB02 = [
    md("""
# 2. Maximum likelihood is minimum cross-entropy

For a 0/1 outcome with $p_i = \\sigma(\\alpha + x_i^\\top\\beta)$,

$$-\\log L(\\theta) = -\\sum_i \\big[y_i\\log p_i + (1-y_i)\\log(1-p_i)\\big]
 = n\\cdot \\mathrm{CE}(\\theta),$$

$n$ times the cross-entropy (the "log loss" of machine learning) of the fitted probabilities.
Maximising the likelihood and minimising the cross-entropy are the same problem; the same holds
for a categorical outcome with softmax probabilities. This notebook checks that, shows why we
work with the *log*-likelihood, and compares optimizers on the same loss.
"""),
    code(SETUP),
    md("## Logistic regression"),
    code('''
fit = mle_ppl.fit("logistic_regression")
print(mle_ppl.load_model("logistic_regression").description)
fit
'''),
    code('''
check = fit.closed_form()
check
'''),
    md("""
By hand: the fitted probabilities, their cross-entropy computed stably with `np.logaddexp`, and
$n\\cdot\\mathrm{CE}$ against the log-likelihood.
"""),
    code('''
d = fit.data
X = d[["x1", "x2"]].to_numpy(dtype=float)
yy = d["y"].to_numpy(dtype=float)
eta = fit.estimates["alpha"] + X @ fit.estimates[["beta[x1]", "beta[x2]"]].to_numpy()
# log p = -log(1 + e^-eta), log(1 - p) = -log(1 + e^eta)
ce = np.mean(yy * np.logaddexp(0, -eta) + (1 - yy) * np.logaddexp(0, eta))
print(f"n * cross-entropy = {len(yy) * ce:.10f}")
print(f"-log-likelihood   = {-fit.loglik:.10f}")
assert np.isclose(len(yy) * ce, -fit.loglik, rtol=1e-10)
'''),
    md("""
## Multinomial logistic regression (softmax)

Iris species from sepal length, with *setosa* as the reference level (its coefficients are
fixed at 0, which makes the softmax identifiable).
"""),
    code('''
multi = mle_ppl.fit("multinomial_logistic")
multi.table()
'''),
    code("multi.closed_form()"),
    md("""
## Why the log? The product underflows

The likelihood is a product of $n$ numbers below 1 (for discrete outcomes). In float64 it
reaches exactly 0.0 after a few hundred to a few thousand observations, and then carries no
information at all; the log-likelihood, a sum, stays finite.
"""),
    code('''
under = mle_ppl.underflow_demo(fit)
print(under)
'''),
    md("""
With 300 observations the product is still representable. Repeat the logistic data 10 times
(the same per-observation terms) and it underflows:
"""),
    code('''
terms = np.concatenate([np.ravel(v) for v in fit.likelihood.pointwise(fit.x).values()])
big = mle_ppl.underflow_demo(np.tile(terms, 10))
print(big)

running_log = np.cumsum(np.tile(terms, 10))
with np.errstate(under="ignore"):
    running_product = np.cumprod(np.exp(np.tile(terms, 10)))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.semilogy(np.arange(1, running_product.size + 1), np.where(running_product > 0,
             running_product, np.nan))
ax1.axvline(big.n_underflow, color="C3", ls="--", label=f"0.0 from n = {big.n_underflow}")
ax1.set(xlabel="n", ylabel="product of likelihood terms", title="likelihood (float64)",
        xlim=(0, running_product.size), ylim=(1e-310, 10))
ax1.legend()
ax2.plot(np.arange(1, running_log.size + 1), running_log)
ax2.set(xlabel="n", ylabel="sum of log terms", title="log-likelihood: stays finite")
fig.tight_layout()
fig
'''),
    md("""
## Gradient descent, L-BFGS and Newton on the same loss

`compare_optimizers` fits the model with each method: gradient descent (on the mean negative
log-likelihood, a fixed learning rate: what a neural-network library would do), L-BFGS, and the
exact-Hessian Newton method. They reach the same $\\hat\\theta$; the iteration counts differ by
orders of magnitude.
"""),
    code('''
opt = mle_ppl.compare_optimizers(fit, learning_rate=0.5)
opt
'''),
    code('''
fig = opt.plot()   # a matplotlib Figure
fig.axes[0].set_title("Loss curves (mean NLL above its minimum)")
fig
'''),
    md("""
From the shell: `mle-ppl check logistic_regression --underflow --optimizers`.
"""),
]

# ------------------------------------------------------------------------------------ 03
NB03 = [
    md("""
# 3. MLE and Bayes, side by side

`mle_ppl.sample` runs NUTS (PyMC) on the **same** model. With the model's flat priors the
posterior is proportional to the likelihood; for large $n$ it is close to a normal distribution
centred at the MLE with standard deviations equal to the standard errors (Bernstein–von Mises).
`mle_ppl.compare` puts both in one table and says where they differ. (The MLE is also the MAP
estimate under flat priors *without* the Jacobian of the transforms: PyMC's `find_MAP` on the
log scale of σ would include it and move the mode.)

Sampling here is short (2 chains × 400 draws) to keep the notebook fast; use the defaults
(4 × 1000) for real work.
"""),
    code(SETUP),
    code('''
SAMPLING = dict(draws=400, tune=400, chains=2, cores=1, random_seed=1)
fit = mle_ppl.fit("logistic_regression")
posterior = mle_ppl.sample("logistic_regression", priors="flat", **SAMPLING)
posterior
'''),
    md("""
## The comparison table

Per parameter: the MLE, its standard error and Wald interval, the posterior mean, sd and HDI at
the same level, and two checks: `shift_se` = (posterior mean − MLE)/SE (near 0) and
`sd_ratio` = posterior sd / SE (near 1), within Monte Carlo error. The model-level rows include
the ELPD-LOO of the posterior and of the Laplace (normal) approximation at the MLE.
"""),
    code('''
cmp = mle_ppl.compare(fit, posterior, random_seed=1)
cmp
'''),
    md("## Forest plot: Wald interval beside the posterior HDI"),
    code('''
pc = mle_ppl.plot_forest(fit, posterior)
pc.viz["figure"].item()
'''),
    md("## Posterior densities with the MLE as a reference line"),
    code('''
pc = mle_ppl.plot_densities(fit, posterior, random_seed=1)
pc.viz["figure"].item()
'''),
    md("""
## A small sample: where they differ, and why

Six observations from a normal distribution, $\\mu$ and $\\sigma$ unknown, flat priors. The MLE
$\\hat\\sigma = \\sqrt{\\mathrm{RSS}/n}$ sits at the *mode* of the likelihood in $\\sigma$, but the
likelihood is strongly skewed to the right: with $n = 6$ it decays only like $\\sigma^{-6}$. The
posterior mean of $\\sigma$ lies well above $\\hat\\sigma$, and its sd is larger than the Wald
standard error, which assumes a symmetric (normal) likelihood. $\\mu$, whose likelihood is
symmetric, agrees better; its posterior is a Student-t, wider than the normal approximation.
"""),
    code('''
SMALL = """
[data]
y = "y"

[parameters]
mu = {}
sigma = { lower = 0 }

[likelihood]
y = { distribution = "Normal", mu = "mu", sigma = "sigma" }
"""
small_model = mle_ppl.loads_model(SMALL, name="six_points")
small_data = pd.DataFrame({"y": rng.normal(10.0, 2.0, size=6)})
small_fit = mle_ppl.fit(small_model, data=small_data)
# two parameters: cheap to sample longer, which the heavy right tail of sigma needs
small_post = mle_ppl.sample(small_model, data=small_data, draws=2000, tune=1000, chains=2,
                            cores=1, random_seed=1)
small_cmp = mle_ppl.compare(small_fit, small_post, random_seed=1)
small_cmp
'''),
    code(r'''
sig = small_post["posterior"]["sigma"].values.ravel()
# The exact marginal posterior of sigma under flat priors on (mu, sigma), mu integrated out:
# p(sigma | y) ∝ sigma^-(n-1) exp(-RSS / (2 sigma^2)); normalised numerically on a grid.
yv = small_data["y"].to_numpy()
n_small, rss = yv.size, np.sum((yv - yv.mean()) ** 2)
grid = np.linspace(1e-3, np.quantile(sig, 0.995), 400)
logd = -(n_small - 1) * np.log(grid) - rss / (2 * grid**2)
dens = np.exp(logd - logd.max())
dens /= np.trapezoid(dens, grid)
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.hist(sig, bins=80, range=(0, grid[-1]), density=True, color="C0", alpha=0.45,
        label="NUTS draws of sigma (flat priors)")
ax.plot(grid, dens, color="k", lw=1.2, label="exact marginal posterior")
ax.axvline(small_fit.estimates["sigma"], color="C3", ls="--",
           label=r"MLE $\hat\sigma = \sqrt{\mathrm{RSS}/n}$")
ax.axvline(sig.mean(), color="C0", label="posterior mean")
ax.set_xlim(0, grid[-1])
ax.set_xlabel(r"$\sigma$")
ax.legend()
ax.set_title("n = 6: a skewed likelihood puts the posterior mean above the MLE")
fig
'''),
    md("""
The histogram of the NUTS draws follows the exact marginal posterior (black), an independent
check of the sampler. Three different "centres" of $\\sigma$ appear: the MLE
$\\hat\\sigma = \\sqrt{\\mathrm{RSS}/n}$ maximises the likelihood jointly with $\\mu$; integrating
$\\mu$ out instead of maximising over it moves the mode of the marginal posterior to
$\\sqrt{\\mathrm{RSS}/(n-1)}$; and the long right tail pulls the posterior mean further up.
With large $n$ all three coincide. The `notes` of the comparison say this in words:
"""),
    code('''
for note in small_cmp.notes:
    print("-", note)
'''),
    md("""
From the shell: `mle-ppl compare logistic_regression --flat --plot cmp.png` writes the table
and both figures.
"""),
]

# ------------------------------------------------------------------------------------ 04
NB04 = [
    md("""
# 4. Your own model

A model is a file: a declarative **TOML** file (no code runs; expressions are parsed from a
whitelist) or a **Python** file defining `build(data) -> pm.Model`. This notebook writes one of
each from scratch, fits them in Python and from the shell, and then makes the mistakes users
make, to show the messages they get.
"""),
    code("import subprocess\nimport sys\nimport tempfile\nfrom pathlib import Path\n\n"
         + SETUP + '''

work = Path(tempfile.mkdtemp(prefix="mle_ppl_nb4_"))

def shell(*args):
    """Run `mle-ppl ARGS` as from a terminal; print its output and exit status."""
    res = subprocess.run([sys.executable, "-m", "mle_ppl", *args], capture_output=True,
                         text=True, cwd=work)
    print(res.stdout + res.stderr + f"[exit status {res.returncode}]")'''),
    md("""
## Data: a CSV file

Counts of events over an exposure time, with two covariates.
"""),
    code('''
n = 200
age = rng.uniform(20, 70, size=n)
urban = rng.integers(0, 2, size=n)
exposure = rng.uniform(0.5, 2.0, size=n)
rate = np.exp(-3.0 + 0.03 * age + 0.5 * urban)
counts = rng.poisson(rate * exposure)
pd.DataFrame({"events": counts, "age": age, "urban": urban,
              "exposure": exposure}).to_csv(work / "events.csv", index=False)
pd.read_csv(work / "events.csv").head()
'''),
    md("""
## A TOML model file

- `[data]` maps names used in expressions to columns (a list of columns makes a matrix whose
  dim is named after the key, with the column names as coordinates);
- `[parameters]` are flat on their support (`lower = 0` for a positive one), `dims` makes one
  per column: `beta[age]`, `beta[urban]`;
- `[likelihood]` names a PyMC distribution and its keyword parameters as expressions.
"""),
    code('''
(work / "events.toml").write_text("""
[model]
name = "events"
description = "Poisson rate per unit of exposure, log-linear in age and urban"
data = "events.csv"

[data]
events = "events"
exposure = "exposure"
x = ["age", "urban"]

[parameters]
alpha = {}
beta = { dims = "x" }

[likelihood]
events = { distribution = "Poisson", mu = "exposure * exp(alpha + x @ beta)" }
""")
fit = mle_ppl.fit(work / "events.toml")   # the file names its default data
fit
'''),
    md("""
The fitted rate per unit of exposure, $\\exp(\\hat\\alpha + \\hat\\beta_{age}\\,age +
\\hat\\beta_{urban}\\,urban)$, over the observed rates:
"""),
    code('''
events = pd.read_csv(work / "events.csv")
est = fit.estimates
fig, ax = plt.subplots(figsize=(6, 3.8))
ages = np.linspace(20, 70, 100)
for u, color in ((0, "C0"), (1, "C1")):
    rows = events["urban"] == u
    ax.scatter(events.loc[rows, "age"], events.loc[rows, "events"] / events.loc[rows, "exposure"],
               s=12, color=color, alpha=0.5, label=f"observed rate, urban = {u}")
    rate_hat = np.exp(est["alpha"] + est["beta[age]"] * ages + est["beta[urban]"] * u)
    ax.plot(ages, rate_hat, color=color, lw=2, label=f"MLE rate, urban = {u}")
ax.set(xlabel="age", ylabel="events per unit exposure", ylim=(-0.1, 3))
ax.legend(fontsize=8)
fig
'''),
    md("The same file from the shell (any data with the same columns via `--data`):"),
    code('shell("fit", "events.toml", "--data", "events.csv")'),
    md("""
## A Python model file

For anything the declarative format does not cover: `build(data)` receives the data table
(a DataFrame) and returns a `pm.Model` whose parameters have flat priors. Keep data in
`pm.Data` so a refit on new data reuses the compiled functions.
"""),
    code('''
(work / "events_model.py").write_text("""
import numpy as np
import pymc as pm

DESCRIPTION = "Poisson rate per unit of exposure (Python model file)"
DATA = "events.csv"


def build(data):
    with pm.Model(coords={"x": ["age", "urban"]}) as model:
        X = pm.Data("X", data[["age", "urban"]].to_numpy(dtype=float))
        log_exposure = pm.Data("log_exposure", np.log(data["exposure"].to_numpy(dtype=float)))
        events = pm.Data("events_data", data["events"].to_numpy())
        alpha = pm.Flat("alpha")
        beta = pm.Flat("beta", dims="x")
        pm.Poisson("events", mu=pm.math.exp(log_exposure + alpha + X @ beta), observed=events)
    return model
""")
fit_py = mle_ppl.fit(work / "events_model.py")
pd.DataFrame({"TOML": fit.estimates, "Python": fit_py.estimates})
'''),
    code('''
assert np.allclose(fit.estimates, fit_py.estimates, rtol=1e-8)
fit.to_dict()["parameters"]
'''),
    md("""
## Mistakes, and what they say

Each error names the file, the key and the column, says what was expected, and suggests a fix.
All are subclasses of `mle_ppl.MLEError` (a `ValueError`); the command line prints the message
and exits with status 2.
"""),
    code('''
def show_error(make):
    """Run `make()`, which must fail with an MLEError; print the message."""
    try:
        make()
    except mle_ppl.MLEError as err:
        print(f"{type(err).__name__}: {err}")
    else:
        raise AssertionError("expected an error")

def variant(old, new):
    text = (work / "events.toml").read_text().replace(old, new)
    assert text != (work / "events.toml").read_text()
    return lambda: mle_ppl.fit(mle_ppl.loads_model(text, name="events", base=work))
'''),
    md("A column name with a typo:"),
    code('show_error(variant(\'x = ["age", "urban"]\', \'x = ["age", "urbn"]\'))'),
    md("A distribution PyMC does not have:"),
    code('show_error(variant(\'"Poisson"\', \'"Poison"\'))'),
    md("A distribution parameter that does not exist:"),
    code('show_error(variant(\'mu = "exposure\', \'lam = "exposure\'))'),
    md("An expression that tries to run code (parsed from a whitelist, never evaluated):"),
    code('''show_error(variant('"exposure * exp(alpha + x @ beta)"',
                   '"__import__(\\'os\\').system(\\'echo hi\\')"'))'''),
    md("A parameter that no likelihood uses (it would be non-identifiable):"),
    code('show_error(variant("alpha = {}", "alpha = {}\\ngamma = {}"))'),
    md("Missing values in the data:"),
    code('''
bad = pd.read_csv(work / "events.csv")
bad.loc[[3, 7], "age"] = np.nan
show_error(lambda: mle_ppl.fit(work / "events.toml", data=bad))
'''),
    md("A bundled model name with a typo:"),
    code('show_error(lambda: mle_ppl.fit("logistic_regresion"))'),
    md("""
On the command line the same mistakes give one line on stderr, nothing on stdout, and exit
status 2:
"""),
    code('shell("fit", "events.toml", "--data", "no_such_file.csv")'),
]

# ------------------------------------------------------------------------------------ 05
NB05 = [
    md("""
# 5. Random effects: the marginal likelihood

A random effect is a quantity per group (a subject, a herd, a school) drawn from a distribution
whose parameters are estimated: $u_g \\sim \\mathcal N(0, \\sigma_u^2)$ with $\\sigma_u$ a free
parameter. Maximum likelihood integrates the $u_g$ out and maximises the **marginal** likelihood
of the remaining parameters $\\theta$,

$$L(\\theta) = \\int p(y \\mid \\theta, u)\\, p(u \\mid \\theta)\\, du ,$$

which is what lme4, glmmTMB and statsmodels' `MixedLM` maximise. `mle_ppl.fit` finds random
effects in a model by itself (a proper distribution whose parameters depend on free parameters)
and integrates them out with the Laplace approximation, which is exact for Gaussian linear mixed
models. This notebook fits

1. a linear mixed model, beside statsmodels' `MixedLM`;
2. a binomial GLMM, with the gap between Laplace and exact quadrature;
3. both fits beside their posterior: empirical Bayes vs full Bayes, including a fit whose
   variance estimate is 0 while the posterior says otherwise.
"""),
    code(SETUP),
    md("""
## 1. A linear mixed model beside statsmodels

Reaction times of 18 subjects over 10 days (simulated with the design of the sleep-study data;
`models/data/make_data.py`). A random intercept per subject, in lme4's formula syntax:
"""),
    code('''
import statsmodels.formula.api as smf

reaction = mle_ppl.load_model("linear_mixed").default_data()
lmm = mle_ppl.loads_model("""
[model]
formula = "reaction ~ days + (1 | subject)"
""", name="reaction_intercept")
lmm_fit = mle_ppl.fit(lmm, reaction)
lmm_fit
'''),
    code('''
ref = smf.mixedlm("reaction ~ days", reaction, groups=reaction["subject"]).fit(reml=False)
pd.DataFrame({
    "mle-ppl": [lmm_fit.loglik, *lmm_fit.estimates[["beta[Intercept]", "beta[days]"]],
                lmm_fit.estimates["sd_subject"] ** 2, lmm_fit.estimates["sigma"] ** 2],
    "statsmodels MixedLM": [ref.llf, *ref.fe_params, ref.cov_re.iloc[0, 0], ref.scale],
}, index=["log-likelihood", "Intercept", "days", "var(subject)", "var(residual)"])
'''),
    md("""
The same maximum: for a Gaussian model the Laplace approximation of the integral is exact. The
conditional modes of the random effects (lme4's `ranef`, statsmodels' BLUPs) come with standard
deviations that include the uncertainty of $\\hat\\theta$ (as TMB's `sdreport`):
"""),
    code('''
modes = lmm_fit.random_effects.to_frame()
modes["statsmodels"] = [ref.random_effects[s].iloc[0] for s in sorted(ref.random_effects)]
modes.head()
'''),
    md("""
The bundled model `linear_mixed` has a correlated random intercept **and slope** per subject,
`reaction ~ days + (1 + days | subject)` (`mle-ppl models linear_mixed` prints it;
`mle-ppl fit linear_mixed` prints the variance components in their own table).

## 2. A binomial GLMM: Laplace vs quadrature

The bundled `binomial_mixed` model (a `[random]` section; incidence of a disease in 15 herds over
4 periods, simulated) has a random intercept per herd on the logit scale. Here the Laplace
approximation is an approximation; with one random effect per herd the exact marginal
likelihood is a product of one-dimensional integrals, which adaptive Gauss–Hermite quadrature
computes to any accuracy (with one node it *is* Laplace).
"""),
    code('''
glmm_fit = mle_ppl.fit("binomial_mixed")
glmm_fit.table()
'''),
    code('''
from scipy import special, stats

herds = mle_ppl.load_model("binomial_mixed").default_data()


def marginal_loglik(theta, n_nodes):
    """Adaptive Gauss-Hermite quadrature of the herd integrals (1 node = Laplace)."""
    alpha, b, s = theta[0], np.r_[0.0, theta[1:4]], theta[4]
    y, n = herds["incidence"].to_numpy(), herds["size"].to_numpy()
    eta0 = alpha + b[herds["period"].to_numpy() - 1]
    h = pd.factorize(herds["herd"], sort=True)[0]
    per_herd = lambda v: np.bincount(h, weights=v)
    u = np.zeros(h.max() + 1)
    for _ in range(50):  # Newton for each herd's mode
        p = special.expit(eta0 + u[h])
        u += (per_herd(y - n * p) - u / s**2) / (per_herd(n * p * (1 - p)) + 1 / s**2)
    p = special.expit(eta0 + u[h])
    sd = 1 / np.sqrt(per_herd(n * p * (1 - p)) + 1 / s**2)
    z, w = np.polynomial.hermite.hermgauss(n_nodes)
    vals = [per_herd(stats.binom.logpmf(y, n, special.expit(eta0 + (u + np.sqrt(2) * sd * zk)[h])))
            + stats.norm.logpdf(u + np.sqrt(2) * sd * zk, 0, s) + zk**2 for zk in z]
    return float(np.sum(special.logsumexp(vals, b=w[:, None], axis=0) + np.log(np.sqrt(2) * sd)))


theta_hat = glmm_fit.theta
gap = pd.DataFrame({"nodes": [1, 2, 3, 5, 10, 25]})
gap["marginal log-likelihood at theta_hat"] = [marginal_loglik(theta_hat, k) for k in gap.nodes]
gap["minus mle-ppl's Laplace"] = gap.iloc[:, 1] - glmm_fit.loglik
gap
'''),
    md("""
One node reproduces mle-ppl's Laplace value (to rounding): an independent check of the inner
Newton and the log-determinant. From about 10 nodes on the quadrature has converged: the Laplace
error of this model's log-likelihood is the last row, a few hundredths, small against the
differences that matter for inference (a likelihood-ratio test compares differences of whole
units). Laplace is least accurate with few observations per group and small binomial counts.

mle-ppl does the quadrature itself: `n_quadrature=K` (glmer's `nAGQ`; `mle-ppl fit
--n-quadrature K`) maximises the adaptive Gauss–Hermite marginal instead of Laplace's, for one
scalar random effect per group. Its log-likelihood is the quadrature above at its own estimates:
"""),
    code('''
agq_fit = mle_ppl.fit("binomial_mixed", n_quadrature=25)
print(f"{agq_fit.random_effects.method}: log-likelihood {agq_fit.loglik:.6f}; the quadrature "
      f"above at these estimates: {marginal_loglik(agq_fit.theta, 25):.6f}")
pd.DataFrame({"Laplace": glmm_fit.estimates, "AGQ, 25 nodes": agq_fit.estimates,
              "AGQ std. error": agq_fit.std_errors})
'''),
    md("""
## 3. Empirical Bayes vs full Bayes

`mle_ppl.sample` runs NUTS on the same model, with the random effects keeping their
distribution and flat priors on the fixed effects and variance parameters; `mle_ppl.compare`
puts the marginal MLE and the random effects' modes beside the posterior.
"""),
    code('''
import warnings

SAMPLING = dict(draws=1000, tune=1000, chains=2, cores=1, random_seed=1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", mle_ppl.SamplingWarning)
    glmm_post = mle_ppl.sample("binomial_mixed", priors="flat", **SAMPLING)
    glmm_cmp = mle_ppl.compare(glmm_fit, glmm_post, laplace_draws=0, warn=False)
for w in caught:  # short chains: print the sampler's diagnostics rather than hide them
    if issubclass(w.category, mle_ppl.SamplingWarning):
        print("sampling diagnostic:", w.message)
glmm_cmp
'''),
    md("""
With 15 herds the between-herd SD is estimated with some uncertainty, and its posterior is
right-skewed (sd/SE and the shift of the mean show it); the modes of the herd effects are close
to their posterior means.

### Eight schools: a variance estimate at 0

The classic eight-schools data (Rubin 1981): an estimated effect $y_j$ with known standard error
$\\sigma_j$ per school, and a school effect $u_j \\sim \\mathcal N(0, \\tau^2)$. The marginal MLE of
$\\tau$ is **0**: a legitimate maximum on the boundary (lme4's "singular fit"), reported as such,
with no standard error. The posterior of $\\tau$ under a flat prior is not at 0.
"""),
    code('''
schools = pd.DataFrame({"school": list("ABCDEFGH"), "y": [28.0, 8, -3, 7, -1, 1, 18, 12],
                        "sigma": [15.0, 10, 16, 11, 9, 11, 10, 18]})
eight = mle_ppl.loads_model("""
[data]
y = "y"
sigma = "sigma"
school = { column = "school", categorical = true }

[parameters]
mu = {}
tau = { lower = 0 }

[random]
u = { distribution = "Normal", mu = 0, sigma = "tau", dims = "school" }

[likelihood]
y = { distribution = "Normal", mu = "mu + u[school]", sigma = "sigma" }
""", name="eight_schools")
eight_fit = mle_ppl.fit(eight, schools)
eight_fit
'''),
    code('''
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", mle_ppl.SamplingWarning)
    # NUTS cannot start at tau = 0 (the MLE) and uses PyMC's default start; the funnel of this
    # centred model may leave sampling diagnostics, which we print rather than hide
    eight_post = mle_ppl.sample(eight, schools, draws=1500, tune=1000, chains=2, cores=1,
                                target_accept=0.95, random_seed=3)
    eight_cmp = mle_ppl.compare(eight_fit, eight_post, laplace_draws=0, warn=False)
for w in caught:
    if issubclass(w.category, mle_ppl.SamplingWarning):
        print("sampling diagnostic:", w.message)
print(eight_cmp)
'''),
    code('''
tau = eight_post["posterior"]["tau"].values.ravel()
# the exact marginal posterior of tau under flat priors on mu and tau (BDA eq. 5.21), on a grid
ys, ss = schools["y"].to_numpy(), schools["sigma"].to_numpy()
grid = np.linspace(1e-6, 30, 3001)
w = 1 / (ss**2 + grid[:, None] ** 2)
mu_t = (w * ys).sum(1) / w.sum(1)
logp = -0.5 * np.log(w.sum(1)) + (0.5 * np.log(w) - 0.5 * w * (ys - mu_t[:, None]) ** 2).sum(1)
dens = np.exp(logp - logp.max())
dens /= np.trapezoid(dens, grid)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.hist(tau, bins=80, range=(0, 30), density=True, color="C0", alpha=0.5,
        label="posterior of tau (NUTS, flat prior)")
ax.plot(grid, dens, color="k", lw=1.2, label="exact marginal posterior (BDA 5.21)")
ax.axvline(0, color="C3", lw=2, label=r"marginal MLE $\\hat\\tau = 0$")
ax.axvline(np.median(tau), color="C0", label="posterior median")
ax.set_xlabel(r"between-school SD $\\tau$")
ax.set_ylabel("density")
ax.legend()
ax.set_title("Eight schools: the MLE is at the boundary, the posterior is not")
fig
'''),
    md("""
The black curve is the exact marginal posterior of $\\tau$ (the integrals over $\\mu$ and the
$u_j$ are Gaussian): positive all the way down to 0 but with its median near 5. The NUTS draws
follow it except below about 1, which this *centred* model's funnel keeps the sampler from
reaching (a non-centred parametrisation, $u_j = \\tau z_j$, samples it).

Empirical Bayes plugs $\\hat\\tau = 0$ in and shrinks every school effect to 0; full Bayes
averages over $\\tau$ and keeps the schools apart (posterior sds of about 6 points). Neither is
"wrong": the MLE says the data are consistent with no variation between schools; the posterior
says they do not rule out a variation of 5 to 10 points either. From the shell,
`mle-ppl fit schools.toml --data schools.csv` prints the boundary in the variance-components
table, and `mle-ppl compare` prints the note above.
"""),
]


# ------------------------------------------------------------------------------------ 06
NB06 = [
    md("""
# 6. Data beyond memory, and beyond one machine

The log-likelihood of independent rows is a **sum over rows**, and so are its gradient, its
Hessian and the outer products of the scores that robust standard errors need. mle-ppl therefore
fits data that do not fit in memory by evaluating the *same compiled functions* on one chunk of
rows at a time and adding the results:

- **streamed**: Parquet files read in row chunks on this machine
  (`mle_ppl.fit(model, data="dir/*.parquet", chunk_rows=N)`); memory is bounded by a chunk;
- **Dask**: a `dask.dataframe.DataFrame` whose partitions are bound to the likelihood on the
  workers that hold them (`mle_ppl.fit(model, data=ddf)`); the driver adds the sums and takes
  the Newton step.

Both give the in-memory fit's estimates and standard errors (to rounding), as this notebook
checks.
"""),
    code(SETUP + """
import logging
import tempfile
from pathlib import Path"""),
    md("""
## Data: logistic regression in four Parquet files

A 0/1 outcome, two covariates and a categorical `region` with four levels. The first file has
no row of region `"d"`: the levels are found in a first pass over all files, so every chunk
gets the same design matrix columns.
"""),
    code("""
n = 40_000
region = rng.choice(["a", "b", "c", "d"], size=n)
region[:10_000] = np.where(region[:10_000] == "d", "a", region[:10_000])
x1, x2 = rng.normal(size=n), rng.normal(size=n)
effect = pd.Series(region).map({"a": 0.0, "b": 0.4, "c": -0.4, "d": 0.8}).to_numpy()
p = 1 / (1 + np.exp(-(-0.3 + 0.8 * x1 - 0.5 * x2 + effect)))
table = pd.DataFrame({"y": (rng.random(n) < p).astype(int), "x1": x1, "x2": x2,
                      "region": region, "shop": rng.integers(0, 200, size=n)})

work = Path(tempfile.mkdtemp(prefix="mle_ppl_nb6_"))
(work / "parts").mkdir()
for i in range(4):
    table.iloc[i * 10_000:(i + 1) * 10_000].to_parquet(work / "parts" / f"part{i}.parquet")
(work / "model.toml").write_text('''
[model]
name = "purchase"
formula = "y ~ x1 + x2 + C(region)"
family = "bernoulli"
''')
sorted(f.name for f in (work / "parts").iterdir())"""),
    md("The reference: the in-memory fit of the whole table."),
    code("""
in_memory = mle_ppl.fit(work / "model.toml", data=table)
in_memory.table()"""),
    md("""
## Streamed: 3,000 rows at a time

Each file is read in record batches of at most `chunk_rows` rows (the last one of each file is
shorter); the compiled functions are built once and reused for every chunk length.
"""),
    code('''
streamed = mle_ppl.fit(work / "model.toml", data=str(work / "parts" / "*.parquet"),
                       chunk_rows=3_000)
print(streamed.source.reading)

def distance(fit, ref):
    """Largest difference of the estimates in standard errors, and of the SEs (relative)."""
    d_est = np.max(np.abs(fit.estimates - ref.estimates) / ref.std_errors)
    d_se = np.max(np.abs(fit.std_errors / ref.std_errors - 1))
    return f"max |estimate difference| = {d_est:.1e} SE, max |SE ratio - 1| = {d_se:.1e}"

distance(streamed, in_memory)'''),
    md("""
Everything that needs only sums works on chunked data: Wald and sandwich standard errors
(cluster-robust ones when the cluster column is in the files), likelihood-ratio tests, AIC/BIC
and profile likelihood. Cluster-robust standard errors by shop, with the scores summed per
shop chunk by chunk, beside statsmodels' on the whole table (the same small-sample factor
$\frac{G}{G-1}\frac{n-1}{n-k}$):
"""),
    code("""
import statsmodels.formula.api as smf

ref = smf.logit("y ~ x1 + x2 + C(region)", table).fit(
    disp=0, cov_type="cluster", cov_kwds={"groups": table["shop"]})
cov = streamed.robust_cov("cluster", groups="shop")
pd.DataFrame({"streamed": pd.Series(np.sqrt(np.diag(cov)), index=cov.index),
              "statsmodels": ref.bse.rename(lambda name: f"beta[{name}]")}
             ).loc[list(in_memory.labels)]"""),
    md("""
What needs every row's value at once does not, and says so: a nonparametric bootstrap
resamples rows, so it raises `NotAvailable` (an `MLEError`):
"""),
    code("""
try:
    streamed.bootstrap(n_boot=100)
except mle_ppl.MLEError as err:
    print(f"{type(err).__name__}: {err}")"""),
    md("""
## On a Dask cluster

A `LocalCluster` with two worker processes stands in for a real cluster here (with a real
one, connect with `Client("tcp://scheduler:8786")`, or run `mle-ppl fit ... --scheduler
ADDRESS` on the command line). Each worker binds its partitions once, keeps them in memory
and compiles the likelihood once; each Newton iteration sends the parameter vector out and
gets sums back.
"""),
    code("""
import dask.dataframe as dd
from distributed import Client, LocalCluster

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       silence_logs=logging.ERROR, dashboard_address=":0")
client = Client(cluster)
ddf = dd.read_parquet(sorted(str(f) for f in (work / "parts").glob("*.parquet")))
on_dask = mle_ppl.fit(work / "model.toml", data=ddf)
print(on_dask.source.reading)
distance(on_dask, in_memory)"""),
    code("on_dask.table()"),
    md("""
The three fits side by side (estimates with 95% Wald intervals): they coincide.
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 3.5))
labels = list(in_memory.labels)
for k, (name, fit) in enumerate([("in memory", in_memory), ("streamed", streamed),
                                 ("Dask", on_dask)]):
    y = np.arange(len(labels)) + (k - 1) * 0.2
    ax.errorbar(fit.estimates, y, xerr=1.96 * fit.std_errors, fmt="o", capsize=3, label=name)
ax.set_yticks(np.arange(len(labels)), labels)
ax.axvline(0, color="grey", lw=0.8)
ax.set_xlabel("estimate (95% Wald interval)")
ax.set_title("One likelihood, three ways to read the data")
ax.legend(loc="upper center")
fig.tight_layout()
fig"""),
    md("Shut the cluster down when done:"),
    code("""
client.close()
cluster.close()"""),
]

NOTEBOOKS = {
    "01_mle_is_least_squares.ipynb": NB01,
    "02_mle_is_cross_entropy.ipynb": NB02,
    "03_mle_vs_bayes.ipynb": NB03,
    "04_your_own_model.ipynb": NB04,
    "05_random_effects.ipynb": NB05,
    "06_big_data.ipynb": NB06,
}


def build(name: str):
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    # deterministic cell ids, so rebuilding does not change unchanged notebooks
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i:02d}"
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        text = nbformat.writes(build(name)) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python notebooks/_build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
