"""The ``mle-ppl`` command line.

Each subcommand lives in its own module under ``mle_ppl._src.cli`` and defines:

- ``HELP``: one line for ``mle-ppl --help``;
- ``EXAMPLES``: text shown at the end of ``mle-ppl CMD --help``;
- ``add_arguments(parser)``: its options;
- ``run(args) -> int``: the exit status (0 fitted, 1 fitted but not trustworthy, 2 bad input).

User mistakes print one line on stderr and exit 2 without a traceback; nothing is written to
stdout then. That covers :class:`~mle_ppl.MLEError` (every check of models, data and options),
invalid options (argparse's errors, shortened to one line), any ``OSError`` (missing, unreadable or
unwritable files), and the errors Python raises on absurd input (``OverflowError``,
``RecursionError``, ``MemoryError``, ``UnicodeError``), named with the command's inputs. Library
chatter (NumPy's RuntimeWarnings, PyMC's ImputationWarning) is not shown: diagnostics are in the
output itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

#: The one registry of subcommands, in the order ``--help`` lists them.
COMMANDS = ("fit", "check", "sample", "compare", "models", "demo")

DESCRIPTION = """\
mle-ppl: maximum-likelihood fits of PyMC models with flat priors.

A model is a declarative TOML file, a Python file defining build(data), or the name of a bundled
model (see `mle-ppl models`). Exit status: 0 fitted; 1 fitted but not trustworthy (not converged,
non-identifiable, separation, boundary: the output says why); 2 bad input.
"""


def _load(name: str):
    try:
        return importlib.import_module(f"mle_ppl._src.cli.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"mle_ppl._src.cli.{name}":
            return None
        raise


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``mle-ppl fit: error: ...``) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mle-ppl", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from mle_ppl import __version__

    parser.add_argument("--version", action="version", version=f"mle-ppl {__version__}")
    parser.commands = {}  # name -> its parser, for errors worded by the subcommand
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP,
                           epilog="examples:\n" + mod.EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
        parser.commands[name] = p
    return parser


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _inputs(args) -> str:
    parts = [f"{k} {v!r}" for k, v in (("MODEL", getattr(args, "model", None)),
                                       ("--data", getattr(args, "data", None))) if v is not None]
    return f" (inputs: {', '.join(parts)})" if parts else ""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mle-ppl``; returns (and exits with) the status code."""
    from mle_ppl._src.errors import MLEError, MLEWarning

    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            command = parser.commands.get(getattr(args, "command", None), parser)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # --help, --version (0) or an invalid option (2, one line)
        return stop.code if isinstance(stop.code, int) else 2
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)  # exit 2: nothing on stdout
        return 2
    prefix = f"mle-ppl {args.command}: error:"
    try:
        with warnings.catch_warnings():
            # Diagnostics are reported in the output (and the exit status), not as Python
            # warnings on stderr; NumPy's floating-point warnings at trial points and PyMC's
            # imputation notice (missing data are refused with a message) are noise here.
            warnings.simplefilter("ignore", MLEWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.filterwarnings("ignore", message=r"Data in .* contains missing values")
            status = args._run(args)
    except MLEError as err:
        print(f"{prefix} {_one_line(getattr(err, 'cli', None) or err)}", file=sys.stderr)
        status = 2
    except OSError as err:  # missing/unreadable/unwritable files, full or read-only disks
        where = f": {err.filename}" if getattr(err, "filename", None) else _inputs(args)
        print(f"{prefix} {_one_line(err.strerror or err) or type(err).__name__}{where}",
              file=sys.stderr)
        status = 2
    except (OverflowError, RecursionError, MemoryError, UnicodeError) as err:
        # absurd input that slipped past the checks (a number with hundreds of digits, nesting
        # thousands deep): still one line, naming the inputs
        detail = _one_line(err)[:200] or "no detail"
        print(f"{prefix} the input is too large or malformed ({type(err).__name__}: {detail})"
              f"{_inputs(args)}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    return status
