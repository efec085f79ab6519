"""``mle-ppl models [NAME]``: list the bundled models, or print one model file."""

from __future__ import annotations

import json
import sys

HELP = "list the bundled models (or print one model file)"

EXAMPLES = """\
  mle-ppl models                          # names and one-line descriptions
  mle-ppl models --json                   # the same as a JSON object {name: description}
  mle-ppl models logistic_regression      # print the model file, to copy and adapt
  mle-ppl fit logistic_regression         # fit a bundled model on its bundled data
"""


def add_arguments(parser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", default=None,
                        help="a bundled model whose file to print")
    parser.add_argument("--json", action="store_true",
                        help="print {name: description} as one JSON document")


def run(args) -> int:
    from mle_ppl._src.errors import ModelFileError, did_you_mean
    from mle_ppl._src.model.library import bundled_models, list_models

    if args.name is not None:
        bundled = bundled_models()
        if args.name not in bundled:
            raise ModelFileError(f"unknown bundled model {args.name!r}."
                                 f"{did_you_mean(args.name, bundled)} Bundled models: "
                                 f"{', '.join(sorted(bundled))}.")
        path = bundled[args.name]
        text = path.read_text(encoding="utf-8")
        if args.json:
            json.dump({"name": args.name, "path": str(path), "text": text}, sys.stdout)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(f"# {path}\n{text}")
        return 0
    models = list_models()
    if args.json:
        json.dump(dict(models), sys.stdout)
        sys.stdout.write("\n")
        return 0
    width = max(len(n) for n, _ in models)
    for name, desc in models:
        sys.stdout.write(f"{name:<{width}}  {desc}\n")
    sys.stdout.write("\nFit one with `mle-ppl fit NAME`; print its file with "
                     "`mle-ppl models NAME`.\n")
    return 0
