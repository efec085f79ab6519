"""The ``mle-ppl`` command line (top layer): ``main`` and one module per subcommand."""

from mle_ppl._src.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
