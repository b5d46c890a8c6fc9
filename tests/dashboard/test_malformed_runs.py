"""Malformed runs never give a 500 or a blank page: every page answers 200 with the banner
naming the file and the problem, and the other runs keep working.

Requests go through Flask's test client, as the browser sends them: the page's HTML, then the
Dash pages router's callback that draws the page, then the pages' own callbacks.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import dash
import pytest

from dashboard.app import create_app
from dashboard.data.fetch import Problem, fetch
from dashboard.data.runs import RunNotFound, RunRefused
from profiler.store.chrome_trace import TraceFormatError
from tests.dashboard.malformed import (
    BAD_META,
    BAD_TRACES,
    ODD_TRACES,
    PAGES,
    banner_text,
    element,
    half_written_steps,
    meta_only,
    page_content,
    router,
    text,
)
from tests.dashboard.runs import SAMPLE


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, str]]:
    """A test client over a root of the sample run and every malformed run, and the file each
    malformed run's banner must name."""
    root = tmp_path_factory.mktemp("malformed") / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    builders = {**BAD_TRACES, **ODD_TRACES, **BAD_META}
    blamed = {name: build(root / name) for name, build in builders.items()}
    half_written_steps(root / "steps_half_written")
    meta_only(root / "meta_only")
    return create_app(root).server.test_client(), blamed


def draw(client: Any, page: str, run: str) -> Any:
    """The page's layout for ``run`` (diffed against the sample), after checking that both the
    HTML and the router's answer are 200."""
    search = f"?run={run}" + ("&base=sample" if page == "/diff" else "")
    html = client.get(page + search)
    assert html.status_code == 200 and b"_dash-config" in html.data
    response = router(client, page, search)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return page_content(response)


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("run", sorted(BAD_TRACES))
def test_a_bad_trace_file_is_named_in_every_pages_banner(served: Any, run: str, page: str) -> None:
    client, blamed = served

    content = draw(client, page, run)

    banner = banner_text(content)
    assert banner is not None and blamed[run] in banner, text(content)[:500]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("run", sorted(ODD_TRACES))
def test_odd_events_draw_every_page(served: Any, run: str, page: str) -> None:
    client, blamed = served

    content = draw(client, page, run)

    banner = banner_text(content)
    assert f"run {run}" in text(content).lower()
    assert banner is None or blamed[run] in banner


@pytest.mark.parametrize("run", sorted(BAD_META))
def test_bad_run_metadata_is_named_on_the_overview(served: Any, run: str) -> None:
    client, blamed = served

    banner = banner_text(draw(client, "/", run))

    assert banner is not None and blamed[run] in banner


@pytest.mark.parametrize("page", PAGES[1:])
@pytest.mark.parametrize("run", sorted(BAD_META))
def test_bad_run_metadata_leaves_the_trace_pages_whole(served: Any, run: str, page: str) -> None:
    client, _ = served

    content = draw(client, page, run)

    assert banner_text(content) is None
    assert f"run {run}" in text(content).lower()


def test_a_half_written_last_steps_line_is_no_error(served: Any) -> None:
    client, _ = served

    content = draw(client, "/", "steps_half_written")

    assert banner_text(content) is None
    metrics = element(content, "step-metrics")
    assert len(metrics["figure"]["data"][0]["y"]) == 5  # the five whole lines


@pytest.mark.parametrize("page", PAGES)
def test_a_run_with_only_metadata_draws_every_page(served: Any, page: str) -> None:
    client, _ = served

    content = draw(client, page, "meta_only")

    assert banner_text(content) is None
    if page == "/":
        assert "complete" in text(element(content, "environment"))
    if page == "/timeline":
        assert element(content, "no-trace-files") is not None


@pytest.mark.parametrize("page", PAGES)
def test_the_sample_run_still_works_beside_the_bad_ones(served: Any, page: str) -> None:
    client, _ = served
    for run in [*BAD_TRACES, *ODD_TRACES, *BAD_META]:
        draw(client, page, run)

    content = draw(client, page, "sample")

    assert banner_text(content) is None
    assert "Refused" not in text(content) and "There is no run" not in text(content)


def test_a_bad_first_run_does_not_break_the_first_request(tmp_path: Path) -> None:
    """Dash draws every page's layout for the first run on the first request (its validation
    layout): a bad first run must not answer that request with a 500."""
    root = tmp_path / "traces"
    BAD_META["steps_wrong_types"](root / "a_bad")
    BAD_TRACES["corrupt_gzip"](root / "b_bad")
    client = create_app(root).server.test_client()

    assert client.get("/").status_code == 200
    assert "meta/steps.0.jsonl" in (banner_text(page_content(router(client, "/", ""))) or "")


@pytest.mark.parametrize(
    ("page", "search", "notice"),
    [
        ("/", "?run=sample&run=corrupt_gzip", "run-refused"),
        ("/timeline", "?run=sample&file=a&file=b", "file-refused"),
        ("/diff", "?run=sample&base=a&base=b", "base-refused"),
        ("/", "?run=", "run-refused"),
        ("/operators", "?run=%00", "run-refused"),
    ],
)
def test_odd_queries_get_a_notice(served: Any, page: str, search: str, notice: str) -> None:
    client, _ = served

    response = router(client, page, search)

    assert response.status_code == 200
    assert element(page_content(response), notice) is not None


def _callback(client: Any, output: str, outputs: Any, inputs: list, state: list) -> Any:
    """POST callback ``output`` (``outputs``: a list for a multi-output one, else a dict)."""
    body = {"output": output, "outputs": outputs, "inputs": inputs, "state": state,
            "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"]}  # fmt: skip
    return client.post("/_dash-update-component", json=body)


@pytest.mark.parametrize("run", ["corrupt_gzip", "empty_file", "meta_only", "nope", "../x"])
def test_the_pages_callbacks_answer_for_bad_runs(served: Any, run: str) -> None:
    client, blamed = served
    search = {"id": "url", "property": "search", "value": f"?run={run}"}
    file = blamed.get(run, "x.json")
    regroup = _callback(
        client,
        "..ops-table.rowData...ops-table.columnDefs..",
        [{"id": "ops-table", "property": "rowData"}, {"id": "ops-table", "property": "columnDefs"}],
        [{"id": "group-by-shape", "property": "value", "value": ["shape"]}],
        [search],
    )
    rezoom = _callback(
        client,
        "..timeline.figure...timeline-status.children...timeline-matches.children..",
        [{"id": "timeline", "property": "figure"},
         {"id": "timeline-status", "property": "children"},
         {"id": "timeline-matches", "property": "children"}],
        [{"id": "timeline-zoom", "property": "data", "value": {"xaxis.range": [1, 2]}},
         {"id": "timeline-file", "property": "value", "value": file},
         {"id": "timeline-search", "property": "value", "value": "aten"}],
        [search, {"id": "timeline-flow", "property": "data", "value": None}],
    )  # fmt: skip
    show = _callback(
        client,
        "..event-details.children...timeline-flow.data..",
        [
            {"id": "event-details", "property": "children"},
            {"id": "timeline-flow", "property": "data"},
        ],
        [{"id": "timeline", "property": "clickData", "value": {"points": [{"customdata": 3}]}}],
        [{"id": "timeline-file", "property": "value", "value": file}, search],
    )

    # 204: the callback changed nothing (the page's banner already says why).
    assert {r.status_code for r in (regroup, rezoom, show)} <= {200, 204}
    assert rezoom.status_code == show.status_code == 200
    if run in BAD_TRACES:
        assert file in rezoom.get_data(as_text=True) and file in show.get_data(as_text=True)


def test_a_page_that_raises_shows_the_banner_and_logs(
    served: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The last guard: a bug in a page (not in its data) still answers 200, with the banner."""
    overview = sys.modules[
        next(p for p in dash.page_registry.values() if p["path"] == "/")["module"]
    ]

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug in a figure")

    monkeypatch.setattr(overview, "overview_sections", broken)
    client, _ = served

    with caplog.at_level(logging.ERROR, logger="dashboard"):
        content = draw(client, "/", "sample")

    assert "RuntimeError: a bug in a figure" in (banner_text(content) or "")
    assert any(r.exc_info and "a bug in a figure" in str(r.exc_info[1]) for r in caplog.records)


def _raise(exc: Exception) -> Any:
    def get(_root: Path, _name: str) -> Any:
        raise exc

    return get


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        (RunRefused("run name '../x' leads outside the trace root"), "refused", "outside"),
        (RunNotFound("no run named 'x'"), "unknown", "no run named"),
        (TraceFormatError("/r/w.1.pt.trace.json", "empty file"), "failed", "w.1.pt.trace.json: "),
        (KeyError("ts"), "failed", "run x: cannot be analysed (KeyError: 'ts')"),
        (ValueError("bad"), "failed", "run x: cannot be analysed (ValueError: bad)"),
    ],
)
def test_fetch_turns_every_exception_into_a_problem(
    tmp_path: Path, exc: Exception, kind: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="dashboard"):
        problem = fetch(tmp_path, "x", _raise(exc))

    assert isinstance(problem, Problem) and problem.kind == kind
    assert message in problem.message
    # Only the unexpected ones are logged, with their traceback.
    unexpected = not isinstance(exc, RunRefused | RunNotFound | TraceFormatError)
    assert bool([r for r in caplog.records if r.exc_info]) == unexpected
