"""``python -m benchmarks``: run the harness."""

from __future__ import annotations

from benchmarks.run import main

raise SystemExit(main())
