"""``python -m mle_ppl`` runs the command line."""

from mle_ppl._src.cli import main

raise SystemExit(main())
