"""Package attributes that load their module on first use (PEP 562).

A package whose parts differ in weight (``lvmbench.runner``: the request type vs the executor;
``lvmbench.encoders``: a name check vs building a model) keeps ``from package import name`` working
while importing the package itself costs nothing: commands that train nothing never load torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, where: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``where`` maps a name to the submodule (or a
    dotted module) that defines it; a name is looked up once, then kept in the package."""
    pkg = importlib.import_module(package)

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(module if "." in module else f"{package}.{module}"), name)
        setattr(pkg, name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(pkg)) | set(where))

    return getattr_, dir_
