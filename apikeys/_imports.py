"""Import guards for optional dependencies."""

from __future__ import annotations

import importlib
from types import ModuleType

from apikeys._errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an error naming ``pip install 'apikeys[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra) from exc


__all__ = ["require"]
