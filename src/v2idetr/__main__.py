"""`python -m v2idetr` (and `torchrun -m v2idetr`) runs the CLI."""

from v2idetr.cli import main

raise SystemExit(main())
