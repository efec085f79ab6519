"""``mle-ppl demo``: the main job on the bundled models and data.

Fits the bundled models whose MLE has a closed form (least squares, cross-entropy) on their
bundled data, prints the MLE tables and the closed-form identities, and with ``--bayes`` samples
one model with NUTS under flat priors and compares the posterior with the MLE.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HELP = "the main job: fit bundled models, check the closed-form identities (and --bayes)"

#: Models fitted by default: one per closed-form identity (MSE, binary and categorical
#: cross-entropy), each on its own bundled data.
DEFAULT_MODELS = ("linear_regression", "logistic_regression", "multinomial_logistic")

#: The model sampled with ``--bayes`` (n = 300: flat-prior posterior ≈ normal around the MLE).
BAYES_MODEL = "logistic_regression"
BAYES_SETTINGS = {"draws": 500, "tune": 500, "chains": 2, "cores": 1, "random_seed": 20240611}

EXAMPLES = f"""\
  mle-ppl demo                       # MLE tables and closed-form identities, bundled data
  mle-ppl demo --bayes               # also NUTS (flat priors) vs MLE on {BAYES_MODEL}
  mle-ppl demo --out results/        # also write DataTrees (.nc), plots and demo.json
  mle-ppl demo --model poisson_exposure --model linear_regression
  mle-ppl demo --quiet; echo $?      # exit status only
  mle-ppl demo --method gd --max-iter 20   # stopped early: the checks fail, exit 1

models fitted by default (see `mle-ppl models`):
  {", ".join(DEFAULT_MODELS)}.
--out DIR writes DIR/<model>.nc (the fit as an ArviZ DataTree), DIR/demo.json, and with --bayes
DIR/<model>_posterior.nc, DIR/<model>_forest.png and DIR/<model>_forest_densities.png.
exit status: 0 every fit is trustworthy and every closed-form identity holds (and, with
--bayes, sampling is healthy); 1 otherwise (the output says which); 2 bad input.
"""


def add_arguments(parser) -> None:
    from mle_ppl._src.cli._common import positive_int

    parser.add_argument("--bayes", action="store_true",
                        help=f"also sample {BAYES_MODEL} with NUTS (flat priors, "
                             f"{BAYES_SETTINGS['chains']} chains x {BAYES_SETTINGS['draws']} "
                             "draws) and compare with the MLE")
    parser.add_argument("--model", metavar="NAME", action="append", default=None,
                        help="bundled model to fit instead of the defaults (repeatable)")
    parser.add_argument("--method", default="newton", metavar="METHOD",
                        help="optimizer for the fits: newton (default), lbfgs or gd")
    parser.add_argument("--max-iter", type=positive_int, default=None, metavar="N",
                        help="iteration cap of the optimizer (stop early to see a check fail)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for DataTrees (.nc), plots and demo.json (created if "
                             "missing)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of tables")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing; the exit status tells the outcome")


def _out_dir(out: str | None) -> Path | None:
    from mle_ppl._src.errors import MLEError

    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise MLEError(f"--out {out!r} is a file; demo writes several files, give a folder "
                       "(created if missing), e.g. --out results/.")
    if not path.parent.is_dir() and str(path.parent) not in ("", "."):
        raise MLEError(f"--out {out!r}: the parent folder {str(path.parent)!r} does not exist.")
    from mle_ppl._src.cli._common import check_writable_folder

    # the folder (or, if it is still to be created, its parent) must be writable before any fit
    check_writable_folder("--out", out, path if path.is_dir() else
                          (path.parent if str(path.parent) else Path(".")))
    return path


def _models(names: list[str] | None) -> list[str]:
    from mle_ppl._src.errors import ModelFileError, did_you_mean
    from mle_ppl._src.model.library import bundled_models

    chosen = list(dict.fromkeys(names)) if names else list(DEFAULT_MODELS)
    bundled = bundled_models()
    for name in chosen:
        if name not in bundled:
            raise ModelFileError(f"--model {name!r} is not a bundled model."
                                 f"{did_you_mean(name, bundled)} Bundled models: "
                                 f"{', '.join(sorted(bundled))}.")
    return chosen


def run(args) -> int:
    from rich.panel import Panel
    from rich.rule import Rule

    from mle_ppl._src.api.fit import fit
    from mle_ppl._src.cli import _ui
    from mle_ppl._src.engine.optimize import get_method
    from mle_ppl._src.report.closed_form import closed_form_check
    from mle_ppl._src.report.teaching import underflow_demo

    get_method(args.method)  # unknown names: an MLEError listing the methods
    out = _out_dir(args.out)
    names = _models(args.model)
    quiet = args.quiet or args.json
    con = _ui.stdout_console(quiet=quiet)
    show = _ui.progress_enabled(args.quiet)
    if out is not None:
        out.mkdir(exist_ok=True)

    failures: list[str] = []
    doc: dict = {"models": {}, "comparison": None, "files": []}
    con.print(Rule("[bold]mle-ppl demo[/bold]: maximum likelihood = minimum loss"))
    con.print("Each bundled model is fitted by maximum likelihood (exact-Hessian Newton) on its "
              "bundled data; where the likelihood is Gaussian with a linear mean or "
              "Bernoulli/categorical, the fit is checked against a closed form computed "
              "independently with NumPy (least squares; cross-entropy).\n")
    for name in names:
        with _ui.step(f"fitting {name} ({args.method}; compiling the likelihood first)",
                      enabled=show):
            result = fit(name, method=args.method, max_iter=args.max_iter, warn=False)
        with _ui.step(f"closed-form check of {name}", enabled=show):
            check = closed_form_check(result)
            under = underflow_demo(result)
        desc = result.spec.description if result.spec is not None else ""
        con.print(Panel(f"[bold]{name}[/bold]: {_ui.esc(desc)}\n"
                        f"n = {result.n_obs}, {result.n_params} parameters, "
                        f"log-likelihood = {result.loglik:.10g}, AIC = {result.aic:.6g}, "
                        f"BIC = {result.bic:.6g}, {result.iterations} iterations "
                        f"({result.method}), converged = {result.converged}", expand=False))
        con.print(_ui.fit_table(result, title="Maximum-likelihood estimates "
                                              "(SE from the observed information)"))
        for w in result.warnings:
            con.print(f"[bold red]WARNING[/bold red]: {_ui.esc(w)}")
            failures.append(f"{name}: {w}")
        if not result.converged and not result.warnings:
            failures.append(f"{name}: the optimizer did not converge")
        if check.applies:
            verdict = ("[green]all identities hold[/green]" if check.agrees
                       else "[bold red]an identity FAILS[/bold red]")
            con.print(f"\n[bold]Closed form[/bold] ({check.kind}: {check.family}, "
                      f"{check.link} link): {verdict}\n{_ui.esc(check.reason)}\nreference: "
                      f"{_ui.esc(check.reference)}")
            con.print(_ui.check_table(check))
            for note in check.notes:
                con.print(f"[italic]Note[/italic]: {_ui.esc(note)}")
            if not check.agrees:
                bad = [r.quantity for r in check.rows if not r.agrees]
                failures.append(f"{name}: closed form disagrees on {', '.join(bad)}")
        else:
            con.print(f"\n[bold]Closed form[/bold]: none applies: {_ui.esc(check.reason)}")
        if under.n_underflow is not None:
            con.print(f"Why the log: the likelihood as a product of the {under.n_obs} terms "
                      f"is {under.product!r} in float64 (0.0 after n = {under.n_underflow}); "
                      f"the log-likelihood is a finite {under.loglik:.10g}.")
        elif under.n_predicted is not None:
            con.print(f"Why the log: the likelihood as a product would underflow to 0.0 in "
                      f"float64 after about n = {under.n_predicted:.0f} observations like "
                      f"these; the log-likelihood stays finite ({under.loglik:.10g}).")
        con.print()
        entry = result.to_dict()
        entry["underflow"] = under.to_dict()
        doc["models"][name] = entry
        if out is not None:
            from mle_ppl._src.cli.fit import write_datatree

            path = out / f"{name}.nc"
            with _ui.step(f"writing {path}", enabled=show):
                write_datatree(result.to_datatree(), path, shown=str(path))
            doc["files"].append(str(path))

    if args.bayes:
        failures += _bayes(args, con, out, doc, show)

    con.print(Rule("summary"))
    con.print(_summary_table(doc))
    if failures:
        con.print("[bold red]demo found problems:[/bold red]")
        for f in failures:
            con.print(f"  - {_ui.esc(f)}")
    else:
        con.print("[green]Every fit is trustworthy and every closed-form identity holds.[/green]")
    for f in doc["files"]:
        con.print(f"written: {_ui.esc(f)}")
    doc["ok"] = not failures
    doc["problems"] = failures
    if out is not None:
        path = out / "demo.json"
        path.write_text(json.dumps(doc, allow_nan=False, indent=1) + "\n", encoding="utf-8")
        if not quiet:
            con.print(f"written: {_ui.esc(path)}")
    if args.json and not args.quiet:
        json.dump(doc, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
    return 0 if not failures else 1


def _summary_table(doc):
    from rich.text import Text

    from mle_ppl._src.cli._table import Col, FitTable, Num

    cols = [Col("model", "label"), Col("n"), Col("params"), Col("log-likelihood"),
            Col("trustworthy", "mark"), Col("closed form", "mark")]
    rows = []
    for name, d in doc["models"].items():
        cf = d.get("closed_form", {})
        cf_txt = (Text("none applies") if not cf.get("applies") else
                  Text("holds", style="green") if cf.get("agrees") else
                  Text("FAILS", style="bold red"))
        ok = d["converged"] and not d["warnings"]
        rows.append([name, str(d["n_obs"]), str(d["n_params"]), Num(d["loglik"], 10, 6),
                     Text("yes", style="green") if ok else Text("no", style="bold red"), cf_txt])
    return FitTable(cols, rows)


def _bayes(args, con, out, doc, show) -> list[str]:
    """NUTS under flat priors on BAYES_MODEL, compared with its MLE. Returns problems."""
    import warnings

    from rich.rule import Rule

    from mle_ppl._src.api.fit import fit
    from mle_ppl._src.bayes.compare import compare
    from mle_ppl._src.bayes.sample import sample
    from mle_ppl._src.cli import _ui
    from mle_ppl._src.errors import SamplingWarning

    name = BAYES_MODEL
    s = BAYES_SETTINGS
    con.print(Rule(f"[bold]MLE vs Bayes[/bold]: {name}, flat priors"))
    con.print("Under flat priors the posterior is proportional to the likelihood; with n large "
              "it is close to normal around the MLE with sd ≈ SE (Bernstein–von Mises): "
              "(mean − MLE)/SE near 0 and sd/SE near 1, up to Monte Carlo error.\n")
    with _ui.step(f"fitting {name}", enabled=show):
        result = fit(name, warn=False)
    with _ui.step(f"sampling {name} with NUTS ({s['chains']} chains × {s['draws']} draws, "
                  "compiling first)", enabled=show), warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # reported below from the attrs
        tree = sample(name, priors="flat", draws=s["draws"], tune=s["tune"],
                      chains=s["chains"], cores=s["cores"], random_seed=s["random_seed"])
    with _ui.step("comparing (ELPD-LOO of the posterior and of Laplace draws)", enabled=show), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        cmp = compare(result, tree, laplace_draws=1000, random_seed=s["random_seed"])
    con.print(_ui.comparison_table(cmp, title=f"MLE (Wald) vs NUTS posterior (HDI), "
                                              f"{cmp.level:.0%}"))
    ms = cmp.model_stats
    con.print(f"log-likelihood at the MLE {ms['loglik']:.6g}, AIC {ms['aic']:.6g}, "
              f"BIC {ms['bic']:.6g}; ELPD-LOO of the posterior {_ui.fmt(ms['elpd_loo'])} ± "
              f"{_ui.fmt(ms['elpd_loo_se'], 3)}, of the Laplace approximation "
              f"{_ui.fmt(ms['elpd_loo_laplace'])} ± {_ui.fmt(ms['elpd_loo_laplace_se'], 3)}")
    for n in cmp.notes:
        con.print(f"[italic]Note[/italic]: {_ui.esc(n)}")
    problems = [p for p in tree["posterior"].attrs.get("mle_ppl_sampling_problems",
                                                       "").split("\n") if p]
    for p in problems:
        con.print(f"[bold red]SAMPLING[/bold red]: {_ui.esc(p)}")
    con.print()
    doc["comparison"] = cmp.to_dict()
    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        from mle_ppl._src.bayes.plots import save_comparison_plots
        from mle_ppl._src.cli.fit import write_datatree

        with _ui.step("writing the posterior and the plots", enabled=show):
            path = out / f"{name}_posterior.nc"
            write_datatree(tree, path)
            doc["files"].append(str(path))
            doc["files"] += [str(p) for p in save_comparison_plots(
                result, tree, out / f"{name}_forest.png", level=cmp.level)]
    return [f"{name} (NUTS): {p}" for p in problems]
