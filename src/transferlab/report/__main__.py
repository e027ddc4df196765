"""``python -m transferlab.report``: the same as the ``transferlab-report`` command."""

from transferlab.report.cli import main

raise SystemExit(main())
