"""`python -m phf ...`: the `phf` command where the console script is not installed."""

from phf.cli import main

raise SystemExit(main())
