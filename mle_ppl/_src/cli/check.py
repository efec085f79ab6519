"""``mle-ppl check MODEL``: the fit beside its closed form (least squares / cross-entropy)."""

from __future__ import annotations

import json
import sys

HELP = "fit a model and check it against its closed form (least squares / cross-entropy)"

EXAMPLES = """\
  mle-ppl check linear_regression              # MLE = least squares, sigma^2 = RSS/n
  mle-ppl check logistic_regression --json     # NLL = n x cross-entropy, vs a NumPy IRLS
  mle-ppl check model.toml --data d.csv --underflow --optimizers
  mle-ppl check linear_regression --method gd --max-iter 20   # stopped early: exit 1

exit status: 0 every identity agrees (or no closed form applies: the output says why);
1 the fit is not trustworthy or an identity disagrees; 2 bad input.
"""


def add_arguments(parser) -> None:
    from mle_ppl._src.cli._common import add_model_arguments, positive_float, positive_int

    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (the fit's, with 'closed_form')")
    parser.add_argument("--method", default="newton",
                        help="optimizer (see `mle-ppl fit --help`); default newton")
    parser.add_argument("--max-iter", type=positive_int, default=None, metavar="N",
                        help="iteration cap of the optimizer")
    parser.add_argument("--learning-rate", type=positive_float, default=0.1, metavar="LR",
                        help="step size of --method gd (and of gd in --optimizers)")
    parser.add_argument("--se-tol", type=positive_float, default=None, metavar="TOL",
                        help="tolerance for parameters, in standard errors (default 1e-3)")
    parser.add_argument("--underflow", action="store_true",
                        help="also show where the likelihood as a product underflows to 0.0")
    parser.add_argument("--optimizers", action="store_true",
                        help="also fit with newton, lbfgs and gd and compare iterations")


def run(args) -> int:
    from mle_ppl._src.api.fit import fit
    from mle_ppl._src.engine.optimize import get_method
    from mle_ppl._src.report.closed_form import SE_TOL, closed_form_check
    from mle_ppl._src.report.teaching import compare_optimizers, underflow_demo

    get_method(args.method)  # an unknown method is refused before the fit (it lists them)
    se_tol = SE_TOL if args.se_tol is None else args.se_tol
    from mle_ppl._src.cli._ui import progress_enabled

    result = fit(args.model, args.data, method=args.method, max_iter=args.max_iter,
                 learning_rate=args.learning_rate, warn=False,
                 progress=progress_enabled())  # on stderr, only on a terminal
    check = closed_form_check(result, se_tol=se_tol)
    under = underflow_demo(result) if args.underflow else None
    cmp = None
    if args.optimizers:
        cmp = compare_optimizers(result, learning_rate=args.learning_rate,
                                 max_iter=args.max_iter if args.method == "gd" else None)
    status = 0 if result.trustworthy and check.agrees is not False else 1
    if args.json:
        doc = result.to_dict()
        doc["closed_form"] = check.to_dict()
        if under is not None:
            doc["underflow"] = under.to_dict()
        if cmp is not None:
            doc["optimizers"] = cmp.to_dict()
        json.dump(doc, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return status
    _print_check(result, check, under, cmp, status)
    return status


def _print_check(result, check, under, cmp, status) -> None:
    """The check as width-aware text on stdout (every number whole, see cli/_table.py)."""
    from rich.text import Text

    from mle_ppl._src.cli import _ui
    from mle_ppl._src.cli._table import Col, FitTable, Num

    con = _ui.stdout_console()
    con.print(_ui.packed([f"n = {result.n_obs},", f"{result.n_params} parameters,",
                          f"method {result.method},", f"converged = {result.converged},",
                          f"log-likelihood = {result.loglik:.10g}"], con.width, sep=" ",
                         lead=f"model {result.model_name!r}:"), markup=False, soft_wrap=True)
    for w in result.warnings:
        con.print(f"WARNING: {w}", markup=False)
    con.print()
    if not check.applies:
        con.print(f"Closed-form check: no closed form applies: {check.reason}", markup=False)
    else:
        verdict = "all identities agree" if check.agrees else "DISAGREEMENT"
        con.print(f"Closed-form check ({check.kind}: {check.family}, {check.link} link): "
                  f"{verdict}", markup=False)
        con.print(check.reason, markup=False)
        con.print(f"reference: {check.reference}", markup=False)
        con.print(_ui.check_table(check))
        if check.extras:
            con.print(FitTable([Col("closed-form quantity", "text"), Col("value")],
                               [[k, Num(v, 10, 6)] for k, v in check.extras.items()]))
        for n in check.notes:
            con.print(f"Note: {n}", markup=False)
    if under is not None:
        con.print()
        con.print("Likelihood as a product vs log-likelihood", markup=False)
        con.print(str(under), markup=False)
    if cmp is not None:
        tab = cmp.table()
        con.print()
        cols = [Col("method", "label"), Col("converged", "mark"), Col("iterations"),
                Col("n_evals"), Col("loglik"), Col("max_dev_se"), Col("time_s")]
        rows = [[str(m), Text(str(bool(r.converged))), str(r.iterations), str(r.n_evals),
                 Num(r.loglik, 10, 6), Num(r.max_dev_se, 3, 2), Num(r.time_s, 3, 2)]
                for m, r in tab.iterrows()]
        con.print(FitTable(cols, rows, title="Optimizers on the same negative log-likelihood "
                                             "(max_dev_se: largest |θ − θ_newton| in standard "
                                             "errors)"))
    if status:
        why = ("the fit is not trustworthy (see warnings)" if not result.trustworthy
               else "an identity disagrees with the closed form")
        con.print()
        con.print(f"check failed: {why}", markup=False)
