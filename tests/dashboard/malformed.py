"""Malformed runs for the dashboard's reliability tests, and a Flask test client's view of them.

Each builder writes one run under a root and returns what the page's banner must name: the
file to blame (a trace file's name, ``meta/run.json`` or ``meta/steps.0.jsonl``).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.dashboard.runs import SAMPLE, plain_trace

TRACE = "host_1.1700000000000.pt.trace.json"
RUN_JSON = "meta/run.json"
STEPS = "meta/steps.0.jsonl"
PAGES = ("/", "/timeline", "/operators", "/kernels", "/memory", "/modules", "/distributed", "/diff")


def _trace_run(data: bytes, *, gz: bool = False) -> Callable[[Path], str]:
    def build(run: Path) -> str:
        run.mkdir(parents=True)
        name = TRACE + (".gz" if gz else "")
        (run / name).write_bytes(data)
        return name

    return build


def _events(events: list[Any]) -> bytes:
    return json.dumps({**plain_trace(), "traceEvents": events}).encode()


def _meta_run(*, run_json: str | None = None, steps: str | bytes | None = None) -> Callable:
    """The sample run with its ``run.json`` or ``steps.0.jsonl`` replaced."""

    def build(run: Path) -> str:
        shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("cache"))
        if run_json is not None:
            (run / RUN_JSON).write_text(run_json)
            return RUN_JSON
        data = steps.encode() if isinstance(steps, str) else steps
        (run / STEPS).write_bytes(data or b"")
        return STEPS

    return build


_PLAIN = json.dumps(plain_trace()).encode()
_SAMPLE_STEPS = (SAMPLE / STEPS).read_text().splitlines()
_WRONG_TYPES = [{"ph": 5, "cat": [], "name": {"a": 1}, "pid": "x", "tid": None, "ts": "abc",
                 "dur": [], "args": 7}]  # fmt: skip
_WRONG_ARGS = [
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 1, "dur": 2,
     "args": "nope"},
    {"ph": "i", "cat": "cpu_instant_event", "name": "[memory]", "pid": 1, "tid": 1, "ts": 3,
     "args": {"Bytes": "x", "Total Allocated": [], "Device Type": "gpu"}},
]  # fmt: skip
_HUGE = [
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 10**30, "tid": 10**40, "ts": 10**25,
     "dur": 10**22, "args": {"Input Dims": [[10**30]], "External id": 10**50}},
    {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#99999999999999999999999",
     "pid": 1, "tid": 1, "ts": -(10**20), "dur": 10**21, "args": {}},
]  # fmt: skip

#: Runs whose trace file is bad: every page must name the file in its banner.
BAD_TRACES: dict[str, Callable[[Path], str]] = {
    "corrupt_gzip": _trace_run(b"\x1f\x8b this is not <b>gzip</b>", gz=True),
    "truncated_gzip": _trace_run(gzip.compress(_PLAIN)[:40], gz=True),
    "empty_file": _trace_run(b""),
    "truncated_json": _trace_run(_PLAIN[:-30]),
    "events_not_a_list": _trace_run(b'{"traceEvents": 5}'),
    "top_level_list": _trace_run(b"[1, 2, 3]"),
    "events_not_objects": _trace_run(b'{"traceEvents": [1, "x", null]}'),
}

#: Runs whose events are odd: the analysis may refuse the file or read what it can; either way
#: every page draws, and a banner, if any, names the file.
ODD_TRACES: dict[str, Callable[[Path], str]] = {
    "fields_wrong_types": _trace_run(_events(_WRONG_TYPES)),
    "args_wrong_types": _trace_run(_events(_WRONG_ARGS)),
    "huge_ints": _trace_run(_events(_HUGE)),
}

#: Runs whose metadata is bad: the overview must name the file, every page must draw.
BAD_META: dict[str, Callable[[Path], str]] = {
    "run_json_not_json": _meta_run(run_json="{not json"),
    "run_json_a_list": _meta_run(run_json="[1, 2]"),
    "run_json_wrong_types": _meta_run(
        run_json=json.dumps({"status": 5, "environment": "linux", "heartbeat_unix_s": "x"})
    ),
    "run_json_deep": _meta_run(run_json="[" * 100_000),
    "steps_garbage_lines": _meta_run(steps="\n".join([_SAMPLE_STEPS[0], "garbage", "[1]"]) + "\n"),
    "steps_wrong_types": _meta_run(
        steps="\n".join(
            json.dumps(row)
            for row in ({"step": "a", "dur_us": "x"}, {"step": 1, "dur_us": [1]}, {"dur_us": 5})
        )
        + "\n"
    ),
    "steps_not_utf8": _meta_run(steps=b"\xff\xfe\x00garbage\n"),
}


def half_written_steps(run: Path) -> None:
    """The sample run while its writer is mid-line: the last line stops half-way."""
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("cache"))
    text = "\n".join(_SAMPLE_STEPS[:5]) + "\n" + _SAMPLE_STEPS[5][:20]
    (run / STEPS).write_text(text)


def meta_only(run: Path) -> None:
    """A run that has written its metadata and per-step metrics but no trace file yet."""
    (run / "meta").mkdir(parents=True)
    shutil.copy(SAMPLE / RUN_JSON, run / RUN_JSON)
    shutil.copy(SAMPLE / STEPS, run / STEPS)


#: Each page's body, which its fill callback draws (dashboard.components.page).
BODIES = {
    "/": "overview-body",
    "/timeline": "timeline-body",
    "/operators": "operators-body",
    "/kernels": "kernels-body",
    "/memory": "memory-body",
    "/modules": "modules-body",
    "/distributed": "distributed-body",
    "/diff": "diff-body",
}


def router(client: Any, path: str, search: str) -> Any:
    """POST what the browser does to draw ``path?search``: the Dash pages router callback (the
    page's skeleton), then the page's fill callback (its content); the first answer that is
    not a 200, or the fill's answer."""
    skeleton = client.post("/_dash-update-component", json=_router_body(path, search))
    if skeleton.status_code != 200:
        return skeleton
    body = BODIES[path]
    fill = {
        "output": f"{body}.children",
        "outputs": {"id": body, "property": "children"},
        "inputs": [
            {"id": "run-version", "property": "data", "value": None},
            {"id": "url", "property": "search", "value": search},
            {"id": "_pages_store", "property": "data", "value": None},
        ],
        "changedPropIds": ["url.search"],
        "state": [],
    }
    return client.post("/_dash-update-component", json=fill)


def _router_body(path: str, search: str) -> dict[str, Any]:
    return {
        "output": ".._pages_content.children..._pages_store.data..",
        "outputs": [
            {"id": "_pages_content", "property": "children"},
            {"id": "_pages_store", "property": "data"},
        ],
        "inputs": [
            {"id": "_pages_location", "property": "pathname", "value": path},
            {"id": "_pages_location", "property": "search", "value": search},
        ],
        "changedPropIds": ["_pages_location.pathname"],
        "state": [],
    }


def page_content(response: Any) -> Any:
    """The page's content in a fill callback's response, as JSON."""
    (answer,) = response.get_json()["response"].values()
    return answer["children"]


def element(tree: Any, element_id: str) -> Any:
    """The props of the component with id ``element_id`` in a layout's JSON, or None."""
    if isinstance(tree, dict):
        props = tree.get("props", {})
        if isinstance(props, dict) and props.get("id") == element_id:
            return props
        children = list(tree.values())
    elif isinstance(tree, list):
        children = tree
    else:
        return None
    return next((f for c in children if (f := element(c, element_id)) is not None), None)


def text(tree: Any) -> str:
    """Every string in a layout's JSON, joined: what the page says."""
    if isinstance(tree, str):
        return tree
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else []
    return " ".join(text(value) for value in values)


def banner_text(content: Any) -> str | None:
    """What the page's shown ``error-banner`` says, or None when it is hidden or absent."""
    banner = element(content, "error-banner")
    if banner is None or banner.get("hidden"):
        return None
    return text(banner.get("children"))
