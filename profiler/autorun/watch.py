"""Wait for torch to be imported, then profile the process (see :mod:`profiler.autorun`).

Most processes of a command never import torch (a shell, a tokenizer server), and those that do
should not pay for it sooner than they would: the bootstrap only adds a finder to
``sys.meta_path`` that lets Python import torch as usual and, once torch's module has run,
installs :mod:`profiler.autorun.hooks`. Nothing here raises into the importer.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

from profiler.autorun.config import AutorunConfig

_TRIGGER = "torch"


def watch_from_env() -> None:
    """Profile this process once torch is imported, if ``$TRAINPROF_RUN`` says so.

    Raises:
        ValueError: the variable holds no settings this version can read.
    """
    config = AutorunConfig.from_env()
    if config is None:
        return
    if _TRIGGER in sys.modules:  # imported already (by a .pth file): hook it now
        _installed(config)
        return
    sys.meta_path.insert(0, _TorchFinder(config))


class _TorchFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it asks the finders after it for torch's spec and has the spec's
    loader call :func:`_installed` once the module has run. One use, then it is gone."""

    def __init__(self, config: AutorunConfig) -> None:
        self._config = config

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != _TRIGGER:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            return self._hooked_spec(fullname, path, target)
        except Exception as exc:  # the import goes on as if we were not here
            _tell(exc)
            return None

    def _hooked_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> ModuleSpec | None:
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module
        config = self._config

        # On the loader instance (one per spec): torch's __spec__.loader stays the real one.
        def exec_then_hook(module: ModuleType) -> None:
            try:
                exec_module(module)
            finally:
                vars(loader).pop("exec_module", None)
            _installed(config)

        vars(loader)["exec_module"] = exec_then_hook
        return spec


def _installed(config: AutorunConfig) -> Any:
    """Install the hooks; a failure is one line on stderr and the process runs unprofiled."""
    try:
        from profiler.autorun.hooks import install

        return install(config)
    except Exception as exc:
        _tell(exc)
        return None


def _tell(exc: BaseException) -> None:
    sys.stderr.write(f"trainprof: not profiling this process: {type(exc).__name__}: {exc}\n")
