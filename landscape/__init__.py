"""A reproducible loss-landscape laboratory: data, models, directions, evaluation, store.

``landscape.curve``, ``landscape.surface`` and ``landscape.hessian.top_eigenvalues`` / ``trace`` /
``density`` are the library API on any PyTorch model, loss and data (:mod:`landscape.api`).
They and the submodules load on first use, so ``import landscape`` stays cheap (no torch).
"""

import importlib

__version__ = "0.1.0"

_API = ("curve", "surface")


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("landscape.api"), name)
    if name in ("api", "hessian"):
        return importlib.import_module(f"landscape.{name}")
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "api", "hessian"])
