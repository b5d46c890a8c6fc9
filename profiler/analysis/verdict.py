"""The verdict: the one bottleneck to fix first, in words, with what fixing it saves per step.

``verdict(recommendations, step_mean_us)`` picks among findings already made by the rules
(:mod:`profiler.analysis.rules`): the one with the largest estimated saving per step, ties (and
findings whose saving no honest figure gives) by severity. Its share of the step is that saving
over the mean step. ``trainprof summary`` and the dashboard's Overview both say this verdict.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from profiler.analysis.rules import RULES, Severity, severity_rank

#: What the verdict says when no rule fired.
NOTHING_STANDS_OUT = "No bottleneck stands out"
_RULES = {rule.id: rule for rule in RULES}


@dataclass(frozen=True)
class Verdict:
    """The bottleneck to fix first, or that there is none (``rule`` None).

    Attributes:
        rule: the recommendation's rule id; None when nothing stands out.
        severity: the finding's severity.
        bottleneck: the bottleneck in words (the rule's description).
        saving_us_per_step: the rule's estimated saving per step; None where the rule gives no
            estimate (see ``method``).
        step_mean_us: the mean step the share is of.
        saving_pct: the saving's share of the mean step.
        action: the one thing to do (the finding's advice).
        method: how the rule estimates its saving (the "Saving:" part of its docstring).
        page: the dashboard page that shows the evidence.
        text: all of it in one sentence.
    """

    rule: str | None
    severity: Severity | None
    bottleneck: str
    saving_us_per_step: float | None
    step_mean_us: float | None
    saving_pct: float | None
    action: str | None
    method: str | None
    page: str | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        """The summary JSON's ``verdict`` object."""
        return asdict(self)


def leading(recommendations: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The finding to fix first: the largest saving per step; findings with no estimate after
    every one with an estimate; ties by severity, then the order given. None for no findings."""
    return max(recommendations, key=_rank, default=None)  # the first of equals


def _rank(rec: Mapping[str, Any]) -> tuple[bool, float, int]:
    saving = rec.get("saving_us_per_step")
    return saving is not None, float(saving or 0.0), -severity_rank(rec.get("severity"))


def verdict(recommendations: Iterable[Mapping[str, Any]], step_mean_us: float | None) -> Verdict:
    """The verdict of ``recommendations`` (``trainprof.summary/1`` recommendation dicts, each
    with an optional ``method`` that overrides its rule's) on steps of ``step_mean_us`` on
    average (None or 0: no share is given)."""
    rec = leading(recommendations)
    if rec is None:
        text = f"{NOTHING_STANDS_OUT}: no rule found a bottleneck in these traces."
        return Verdict(None, None, NOTHING_STANDS_OUT, None, step_mean_us, None, None, None,
                       None, text)  # fmt: skip
    rule = _RULES.get(str(rec["id"]))
    bottleneck = rule.description.rstrip(".") if rule else str(rec["id"])
    saving = rec.get("saving_us_per_step")
    share = 100.0 * saving / step_mean_us if saving is not None and step_mean_us else None
    action = _action(str(rec.get("message", "")))
    words = [f"{bottleneck}.", _saving_words(saving, share, step_mean_us), f"Action: {action}."]
    return Verdict(
        rule=str(rec["id"]),
        severity=rec.get("severity"),
        bottleneck=bottleneck,
        saving_us_per_step=saving,
        step_mean_us=step_mean_us,
        saving_pct=None if share is None else round(share, 1),
        action=action,
        method=str(rec["method"]) if rec.get("method") else _method(rule),
        page=str(rec.get("page") or "/"),
        text=" ".join(words),
    )


def _saving_words(saving: float | None, share: float | None, step_us: float | None) -> str:
    if saving is None:
        return "The trace shows no honest estimate of what fixing it saves."
    of_step = "" if share is None else f" ({share:.1f}% of the {ms_text(step_us or 0.0)} step)"
    return f"Fixing it saves up to {ms_text(saving)} per step{of_step}."


def ms_text(us: float) -> str:
    """Microseconds in milliseconds, as the verdict writes them (``20.36 ms``)."""
    return f"{us / 1000:,.2f} ms"


def _action(message: str) -> str:
    """The advice part of a finding's message (what follows its figures and ``": "``)."""
    advice = message.split(": ", 1)[-1].strip().rstrip(".")
    return advice[:1].upper() + advice[1:]


def _method(rule: object) -> str | None:
    """The "Saving:" part of a rule's docstring (from "Saving:", at a line's or a sentence's
    start, to the paragraph's end), on one line, in plain words: a cross-reference such as
    ``:attr:`TraceFacts.sync_idle_pct``` reads ``sync_idle_pct``, as a page shows it."""
    doc = inspect.getdoc(type(rule)) if rule is not None else None
    found = re.search(r"(?:^|(?<=\. ))Saving: (.+?)(?:\n\n|\Z)", doc or "", re.S | re.M)
    if not found:
        return None
    text = _ROLE.sub(r"\1", found.group(1)).replace("``", "")
    return " ".join(text.split())


#: A Sphinx cross-reference, ``:role:`Owner.name``` or ``:role:`name```: its last name stays.
_ROLE = re.compile(r":\w+:`(?:[\w.]*\.)?(\w+)`")
