"""Django's command-line utility for the example project.

Install once, from a checkout (``pip install 'apikeys[examples]'`` from PyPI), then run the
project from the repository root (one command; the SQLite file is created on first use)::

    pip install -e '.[examples]'
    python -m examples.django_project.manage runserver 127.0.0.1:8000

or under a production WSGI server::

    waitress-serve --listen=127.0.0.1:8000 examples.django_project.wsgi:application
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
