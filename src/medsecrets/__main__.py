"""``python -m medsecrets``: the same as the ``medsecrets`` console script."""

from medsecrets.cli.app import main

raise SystemExit(main())
