"""The optional C extensions in tests: required under CI (.ci/run installs a compiler and
Python's headers where missing), skipped elsewhere where the install could not build them."""

from __future__ import annotations

import os
from types import ModuleType

import pytest


def require_built(module: ModuleType | None, name: str) -> ModuleType:
    """``module`` (the extension as its Python side imported it, or None): fails the test under
    CI where it was not built, skips it elsewhere."""
    if module is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} was not built")
        pytest.skip(f"{name} was not built (no C compiler at install)")
    return module
