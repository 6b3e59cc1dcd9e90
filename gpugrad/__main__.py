"""``python -m gpugrad``: the command line (see gpugrad.cli)."""

from .cli import main

raise SystemExit(main())
