"""Subcommands of the ``mle-ppl`` command line (see :mod:`mle_ppl._src.cli`)."""
