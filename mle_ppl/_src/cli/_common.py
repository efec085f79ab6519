"""Options shared by the subcommands that take a model and its data."""


def add_model_arguments(parser) -> None:
    """``MODEL`` (model file or bundled name) and ``--data FILE``, worded once for all commands."""
    parser.add_argument("model", metavar="MODEL",
                        help="model file (.toml/.py) or bundled model name (see `mle-ppl models`)")
    parser.add_argument("--data", metavar="FILE", default=None,
                        help="data table, CSV or Parquet (default: the data the model file names)")
