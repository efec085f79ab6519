"""Tables in a real pseudo-terminal at 80 and 60 columns: every number shown is a correct rounding.

Each command runs in a subprocess whose stdout is a pty of the given size (stderr, with the
transient progress spinner, goes to a pipe). The screen text is parsed: every numeric token on a
parameter's lines must be a correct rounding of one of that parameter's values in the command's
JSON output (|shown - value| <= half a unit in the last shown digit), each value must appear,
no line may be wider than the terminal and no "…" may appear (rich's mark of a cut cell).
"""

import fcntl
import json
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.cells import cell_len

from mle_ppl._src.cli._table import Col, FitTable, Num, tokens, wrap

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$")


def run_tty(args, cols, timeout=600):
    """Run ``python -m mle_ppl *args`` with stdout on a pty of ``cols`` columns; its text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "mle_ppl", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError(f"{args} produced no output for {timeout} s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    with proc.stderr:
        err = proc.stderr.read().decode()
    rc = proc.wait()
    text = ANSI.sub("", b"".join(chunks).decode("utf-8")).replace("\r\n", "\n")
    return rc, text, err


def run_json(args):
    proc = subprocess.run([sys.executable, "-m", "mle_ppl", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    return json.loads(proc.stdout)


def correctly_rounded(token: str, value: float) -> bool:
    """``token`` (e.g. ``-3.482e+06``, ``0.0134``, ``<1e-300``) is ``value`` rounded right."""
    if token == "<1e-300":
        return 0 <= value < 1e-300
    if token in ("NaN", "inf", "-inf"):
        return (math.isnan(value) and token == "NaN") or float(token) == value
    mant, _, exp = token.lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    quantum = 10.0 ** (int(exp or 0) - decimals)
    return abs(float(token) - value) <= quantum / 2 * (1 + 1e-9) + 1e-300


def numbers_by_label(text: str, labels):
    """Numeric tokens on each label's lines (horizontal rows, split parts or vertical blocks)."""
    found = {lab: [] for lab in labels}
    order = sorted(labels, key=len, reverse=True)  # beta[x] before beta
    current = None
    for line in text.splitlines():
        # a label cell is followed by the 2-space column gap (or ends the line)
        lab = next((lab for lab in order if line.startswith(lab)
                    and (line.rstrip() == lab or line[len(lab):len(lab) + 2] == "  ")), None)
        if lab is not None:
            current, rest = lab, line[len(lab):]
        elif line.startswith(" ") and current is not None:
            rest = line
        else:
            current, rest = None, ""
        for tok in re.split(r"[\s\[\],]+", rest):
            if tok and (NUMBER.match(tok) or tok in ("<1e-300", "NaN", "inf", "-inf")):
                found[current].append(tok)
    return found


def assert_screen_true(text: str, cols: int, expected: dict[str, list[float]], *, min_shown=None):
    """Every number on a label's lines rounds one of its values; every value is shown."""
    assert "…" not in text, text
    wide = [ln for ln in text.splitlines() if cell_len(ln.rstrip()) > cols]
    assert not wide, wide
    found = numbers_by_label(text, expected)
    for lab, values in expected.items():
        shown = found[lab]
        assert shown, f"{lab}: nothing shown\n{text}"
        for tok in shown:
            assert any(correctly_rounded(tok, v) for v in values), (lab, tok, values)
        matched = [v for v in values if any(correctly_rounded(t, v) for t in shown)]
        assert len(matched) >= (min_shown or len(values)), (lab, shown, values)


# ------------------------------------------------------------------------------ unit level
def test_correctly_rounded_reference():
    assert correctly_rounded("-3.482e+06", -3482258.634)
    assert not correctly_rounded("-3.4822", -3482258.634)  # what rich's ellipsis left
    assert correctly_rounded("0.0134117", 0.01341169)
    assert not correctly_rounded("0.0134", 0.01349)
    assert correctly_rounded("<1e-300", 0.0)


def test_tokens_keep_bracketed_labels_whole():
    assert tokens("beta[sepal_length, versicolor] at θ̂") == ["beta[sepal_length, versicolor]",
                                                           "at", "θ̂"]
    assert wrap("a bb ccc dddd", 6) == ["a bb", "ccc", "dddd"]


@pytest.mark.parametrize("width", [100, 72, 50, 40])
def test_fittable_never_cuts_at_any_width(width):
    from rich.console import Console

    rows = [["alpha", Num(-3482258.634595), Num(667815.2877), Num(1e-320, 3, 2, p_value=True),
             "a rule with several words"],
            ["beta[sepal_length, versicolor]", Num(0.0358191792925), Num(2.5e-5), Num(0.5, 3,
                                                                                      2, True),
             "x"]]
    table = FitTable([Col("parameter", "label"), Col("estimate"), Col("std. error"),
                      Col("P>|z|"), Col("rule", "text")], rows, title="t")
    con = Console(width=width, force_terminal=False)
    with con.capture() as cap:
        con.print(table)
    text = cap.get()
    assert_screen_true(text, width, {"alpha": [-3482258.634595, 667815.2877, 0.0],
                                     "beta[sepal_length, versicolor]": [0.0358191792925, 2.5e-5,
                                                                        0.5]})
    assert "<1e-300" in text and " 0 " not in text


def test_p_values_that_underflow_are_shown_as_a_bound():
    # z ~ 1.5e7: the two-sided normal p-value underflows to 0.0 in float64; the screen says
    # "<1e-300" (true), never "0" (false), in str(fit), its HTML and the CLI table.
    import numpy as np
    import pymc as pm
    from rich.console import Console

    import mle_ppl
    from mle_ppl._src.cli._ui import fit_table

    y = np.random.default_rng(0).normal(1e6, 0.5, 60)
    with pm.Model() as m:
        a = pm.Flat("a")
        s = pm.HalfFlat("s")
        pm.Normal("y", a, s, observed=y)
    fit = mle_ppl.fit(m)
    assert fit.table().loc["a", "p_value"] == 0.0
    row = next(line for line in str(fit).splitlines() if line.startswith("a "))
    assert "<1e-300" in row and " 0 " not in row + " "
    assert "&lt;1e-300" in fit._repr_html_()  # HTML-escaped "<"
    con = Console(width=80, force_terminal=False)
    with con.capture() as cap:
        con.print(fit_table(fit))
    assert "<1e-300" in cap.get()


# ------------------------------------------------------------------------------ commands
@pytest.mark.parametrize("cols", [80, 60])
def test_fit_longley_in_a_terminal(cols):
    doc = run_json(["fit", "linear_regression", "--json"])
    rc, text, err = run_tty(["fit", "linear_regression"], cols)
    assert rc == 0, err
    expected = {lab: [p["estimate"], p["std_err"], p["ci_lower"], p["ci_upper"],
                      p["estimate"] / p["std_err"]] for lab, p in doc["parameters"].items()}
    # the p-value is not in the JSON: z and the estimate/SE identify the row; P>|z| tokens are
    # checked against the normal tail of z below
    from statistics import NormalDist

    for lab, vals in expected.items():
        vals.append(2 * NormalDist().cdf(-abs(vals[4])))
    assert_screen_true(text, cols, expected)
    assert "-3.48" in text  # alpha = -3,482,258.6 (NIST), never "-3.4822…"


@pytest.mark.parametrize("cols", [80, 60])
def test_check_longley_in_a_terminal(cols):
    doc = run_json(["check", "linear_regression", "--json"])
    rc, text, err = run_tty(["check", "linear_regression"], cols)
    assert rc == 0, err
    rows = {r["quantity"]: r for r in doc["closed_form"]["rows"] if r["quantity"] in
            doc["parameters"]}
    expected = {q: [r["mle"], r["closed_form"], r["abs_diff"], r["tol"], 0.001]
                for q, r in rows.items()}  # 0.001: the "0.001 SE" tolerance rule
    assert_screen_true(text, cols, expected, min_shown=4)


@pytest.mark.slow
@pytest.mark.parametrize("cols", [80, 60])
def test_demo_in_a_terminal(cols, tmp_path):
    from statistics import NormalDist

    rc, text, err = run_tty(["demo", "--out", str(tmp_path)], cols)
    assert rc == 0, err
    doc = json.loads((tmp_path / "demo.json").read_text())
    names = list(doc["models"])
    starts = [text.index(f"│ {name}:") for name in names] + [text.index("summary")]
    for k, (name, model) in enumerate(doc["models"].items()):
        section = text[starts[k]:starts[k + 1]]  # one model's panel and tables
        expected = {}
        for lab, p in model["parameters"].items():
            z = p["estimate"] / p["std_err"]
            vals = [p["estimate"], p["std_err"], z, 2 * NormalDist().cdf(-abs(z)),
                    p["ci_lower"], p["ci_upper"]]
            cf = {r["quantity"]: r for r in model["closed_form"]["rows"]}.get(lab)
            if cf:
                vals += [cf["mle"], cf["closed_form"], cf["abs_diff"], cf["tol"], 0.001]
            expected[lab] = vals
        assert_screen_true(section, cols, expected, min_shown=6)
    summary = text[starts[-1]:]
    assert_screen_true(summary, cols, {name: [m["n_obs"], m["n_params"], m["loglik"]]
                                       for name, m in doc["models"].items()})
    assert "beta[sepal_length, versicolor]" in text  # labels whole


@pytest.mark.slow
@pytest.mark.parametrize("cols", [80, 60])
def test_compare_in_a_terminal(cols):
    args = ["compare", "logistic_regression", "--flat", "--draws", "200", "--tune", "200",
            "--chains", "2", "--cores", "1", "--seed", "3", "--laplace-draws", "0"]
    doc = run_json([*args, "--json"])
    rc, text, err = run_tty(args, cols)
    assert rc in (0, 1), err
    expected = {lab: [p[k] for k in ("mle", "std_err", "wald_lower", "wald_upper", "mean", "sd",
                                     "hdi_lower", "hdi_upper", "shift_se", "sd_ratio")]
                for lab, p in doc["parameters"].items()}
    assert_screen_true(text, cols, expected)
