"""The one door from a page to its data: whatever goes wrong becomes a :class:`Problem`.

Every page and every page callback asks for its data through :func:`fetch`. A refused or
unknown name becomes a notice; a file the analysis cannot read, or any exception the analysis
raises on odd content, becomes the page's error banner, and an unexpected exception goes to the
server log with its traceback. So a malformed run never answers with a 500 or a blank page, and
the other runs keep working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from dashboard.data.runs import RunNotFound, RunRefused
from profiler.store.chrome_trace import TraceFormatError

T = TypeVar("T")

log = logging.getLogger("dashboard")

#: ``refused``: a name leading outside the root (or no name); ``unknown``: no such run or file;
#: ``failed``: the data could not be made (the message says which file and why, where known).
ProblemKind = Literal["refused", "unknown", "failed"]


@dataclass(frozen=True)
class Problem:
    """Why a page has no data to show.

    Attributes:
        kind: see :data:`ProblemKind`.
        name: the run (or file) name that was asked for.
        message: one line for the page: the file and the problem where one file is to blame.
    """

    kind: ProblemKind
    name: str
    message: str


def fetch(root: str | Path, name: str, get: Callable[[Path, str], T]) -> T | Problem:
    """``get(root, name)``, or the :class:`Problem` that kept it from returning.

    Args:
        root: the trace store root.
        name: the run's name as the URL gave it (it may be anything a query can hold).
        get: one of the data functions of :mod:`dashboard.data`, or a lambda over several.

    Returns:
        What ``get`` returned, or the problem. Never raises (but for ``BaseException``s such
        as ``KeyboardInterrupt``).
    """
    try:
        return get(Path(root), name)
    except RunRefused as exc:
        return Problem("refused", str(name), str(exc))
    except RunNotFound as exc:
        return Problem("unknown", str(name), str(exc))
    except Exception as exc:  # a page must draw whatever the analysis raised
        return Problem("failed", str(name), failure_message(exc, f"run {name}"))


def failure_message(exc: Exception, subject: str) -> str:
    """One line naming the file and the problem for ``exc`` raised while reading ``subject``.

    A :class:`TraceFormatError` names its own file; anything else is unexpected, so it is
    logged with its traceback and the line names ``subject``.
    """
    if isinstance(exc, TraceFormatError):
        return f"{Path(exc.path).name}: {exc.problem}"
    log.error("%s: cannot be analysed", subject, exc_info=exc)
    return f"{subject}: cannot be analysed ({type(exc).__name__}: {_short(exc)})"


def _short(exc: Exception, limit: int = 300) -> str:
    """The exception's text, cut: some quote a whole event or a whole line of the file."""
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"
