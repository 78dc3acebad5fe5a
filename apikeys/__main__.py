"""``python -m apikeys``: the ``apikeys`` command, for when its script is not on ``PATH``."""

from __future__ import annotations

import sys

from apikeys._cli import main

if __name__ == "__main__":
    sys.exit(main())
