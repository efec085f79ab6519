"""The ``mle-ppl`` command line.

Each subcommand lives in its own module under ``mle_ppl._src.cli`` and defines:

- ``HELP``: one line for ``mle-ppl --help``;
- ``EXAMPLES``: text shown at the end of ``mle-ppl CMD --help``;
- ``add_arguments(parser)``: its options;
- ``run(args) -> int``: the exit status (0 fitted, 1 fitted but not trustworthy, 2 bad input).

User mistakes (:class:`~mle_ppl.MLEError`, missing files) print one message on stderr and exit 2
without a traceback; nothing is written to stdout then.
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mle-ppl", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from mle_ppl import __version__

    parser.add_argument("--version", action="version", version=f"mle-ppl {__version__}")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mle-ppl``; returns (and exits with) the status code."""
    from mle_ppl._src.errors import MLEError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)  # exit 2: nothing on stdout
        return 2
    try:
        with warnings.catch_warnings():
            # Diagnostics are reported in the output (and the exit status), not as Python
            # warnings on stderr.
            from mle_ppl._src.errors import MLEWarning

            warnings.simplefilter("ignore", MLEWarning)
            status = args._run(args)
    except MLEError as err:
        print(f"mle-ppl {args.command}: error: {err}", file=sys.stderr)
        status = 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"mle-ppl {args.command}: error: {err.strerror}: {err.filename}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    return status
