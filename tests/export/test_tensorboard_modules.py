"""Our module ranges in the TensorBoard plugin's Module view, checked with its own parser."""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from profiler.analysis.modules import module_table
from profiler.analysis.table import load_trace
from profiler.events import MODULE_PREFIX, TRACE_SUFFIX
from profiler.export.tensorboard import export_tensorboard, place_trace
from profiler.export.tensorboard_modules import (
    PYTHON_ID_KEY,
    PYTHON_MODULE_ID_KEY,
    PYTHON_PARENT_ID_KEY,
    ThreadNodes,
    module_args,
    plan_module_events,
    rewrite_module_events,
)
from profiler.export.tensorboard_trace import trace_parts
from tests import peers
from tests.conftest import read_trace
from tests.export import SAMPLE_RUN

ADDED_KEYS = (PYTHON_ID_KEY, PYTHON_PARENT_ID_KEY, PYTHON_MODULE_ID_KEY)


def as_stored(event: dict[str, Any]) -> dict[str, Any]:
    """An exported event as the store holds it: a module event of ours back to its range."""
    args = event.get("args") or {}
    if event.get("cat") != "python_function" or "External id" not in args:
        return event  # torch's own python_function events carry no External id
    kept = {key: value for key, value in args.items() if key not in ADDED_KEYS}
    return {**event, "cat": "user_annotation", "args": kept}


def assert_only_module_ranges_changed(source: Path, placed: Path) -> list[dict[str, Any]]:
    """Every event and key of ``placed`` is the source's, but for our forward ranges; returns
    those ranges as exported."""
    stored, exported = read_trace(source), read_trace(placed)
    assert {k: v for k, v in exported.items() if k != "traceEvents"} == {
        k: v for k, v in stored.items() if k != "traceEvents"
    }
    assert [as_stored(e) for e in exported["traceEvents"]] == stored["traceEvents"]
    return [e for e in exported["traceEvents"] if e is not as_stored(e)]


def module_rows(view: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(parent name, name, row) for every row of the plugin's Module view, depth first."""

    def walk(rows: list[dict[str, Any]], parent: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for row in rows:
            yield parent, row["name"], row
            yield from walk(row["children"], row["name"])

    yield from walk(view["data"], "")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def plugin_profiles(run_dir: Path) -> dict[str, Any]:
    """span -> the plugin's profile of the run's one worker, which it read without an error
    (such as "ranges on the same thread should not intersect": it then drops one of them)."""
    errors, logger = _Errors(), logging.getLogger("pytorch_profiler")  # the plugin's
    logger.addHandler(errors)
    try:
        run = peers.tb_plugin_load_run(run_dir)
    finally:
        logger.removeHandler(errors)
    assert errors.messages == []
    return {span: profile for (worker, span), profile in run.profiles.items() if worker != "All"}


def assert_module_view_is_ours(profile: Any, trace: Path) -> int:
    """The plugin's Module view lists the trace's modules, hierarchy, calls and forward time as
    trainprof's own module table has them. Returns how many modules it lists."""
    assert "Module" in [view.display_name for view in profile.views]
    ours = module_table(load_trace(trace, cache=False)).set_index("path")
    label = {path: f"{path} ({row.class_name})" for path, row in ours.iterrows()}
    shown = {name: (parent, row) for parent, name, row in module_rows(profile.get_module_view())}
    assert sorted(shown) == sorted(label.values())
    # The plugin adds end - start per call at the trace's magnitude: each can be off by an ulp
    # of the latest end, once for the end and once for the difference.
    events = read_trace(trace)["traceEvents"]
    ulp = math.ulp(max(e["ts"] + e.get("dur", 0) for e in events if "ts" in e))
    for path, row in ours.iterrows():
        parent, plugin = shown[label[path]]
        assert parent == (label[row.parent] if row.parent else "")
        assert plugin["occurences"] == row.calls > 0
        tolerance = 2 * ulp * row.calls
        assert plugin["host_duration"] == pytest.approx(row.forward_us, abs=tolerance), path
    return len(shown)


# --------------------------------------------------------------------------------------------
# The transform, on ranges given by hand


def _nodes(*spans: tuple[int, float, float]) -> ThreadNodes:
    nodes = ThreadNodes()
    for ordinal, ts, end in spans:
        nodes.add(ordinal, ts, end)
    return nodes


def test_ranges_nest_as_the_plugins_tree_and_modules_are_numbered_per_class() -> None:
    modules = {
        0: ("model", "Sequential"), 1: ("0", "Linear"), 2: ("0.act", "ReLU"), 3: ("1", "Linear"),
        4: ("2", "ReLU"), 5: ("0", "Linear"), 6: ("model", "Sequential"), 7: ("0", "Linear"),
    }  # fmt: skip
    main = _nodes(
        (7, 200, 260),  # the next step's: same span as its parent, later in the file
        (6, 200, 260),
        (4, 80, 120),  # crosses "1" and the root: left out
        (3, 50, 90),  # starts where "0" ends: its sibling
        (2, 20, 30),
        (101, 12, 40),  # an operator between "0" and "0.act"
        (1, 10, 50),
        (0, 0, 100),
        (100, 0, 300),  # ProfilerStep#1
    )
    other = _nodes((5, 0, 10))  # another thread: a root there
    added = module_args({1: main, 2: other}, modules, first_id=11)
    ids = {o: a[PYTHON_ID_KEY] for o, a in added.items()}
    parents = {o: a[PYTHON_PARENT_ID_KEY] for o, a in added.items()}
    assert sorted(added) == [0, 1, 2, 3, 5, 6, 7]
    assert sorted(ids.values()) == list(range(11, 18))
    assert parents == {0: None, 1: ids[0], 2: ids[1], 3: ids[0], 5: None, 6: None, 7: ids[6]}
    numbers = {o: a[PYTHON_MODULE_ID_KEY] for o, a in added.items()}
    assert numbers == {0: 0, 1: 0, 2: 0, 3: 1, 5: 0, 6: 0, 7: 0}  # "2" never became one


def test_a_range_overlapping_an_operator_without_nesting_is_left_out() -> None:
    modules = {0: ("model", "Net"), 1: ("a", "Linear"), 2: ("a.b", "ReLU"), 3: ("c", "Linear")}
    nodes = _nodes(
        (0, 0, 100),
        (1, 10, 50),  # an operator starts in it and ends past it
        (2, 12, 20),  # so its child's parent is the next module out
        (10, 40, 60),
        (11, 65, 80),
        (3, 70, 95),  # starts in an operator and ends past it
    )
    added = module_args({1: nodes}, modules)
    assert sorted(added) == [0, 2]
    assert added[2][PYTHON_PARENT_ID_KEY] == added[0][PYTHON_ID_KEY]


def _trace_text(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"schemaVersion": 1, "traceEvents": events, "traceName": "t"})


def test_only_our_forward_ranges_are_planned(tmp_path: Path) -> None:
    def event(name: str, cat: str = "user_annotation", **args: Any) -> dict[str, Any]:
        return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": 1, "ts": 1.0, "dur": 5.0,
                "args": args}  # fmt: skip

    ours = event("nn.Module: model (Net)")
    others = [
        event("nn.Module: model (Net).backward"),  # the backward lane
        event("nn.Module: model (Net)", cat="gpu_user_annotation"),  # the GPU copy
        event("nn.Module: Linear_0", cat="user_annotation"),  # not a name of ours
        event("frame.py(3): f", cat="python_function", **{"Python id": 41}),
    ]
    path = tmp_path / "t.json"
    path.write_bytes(_trace_text([*others, ours]))
    assert plan_module_events(trace_parts(path)) == {
        4: {PYTHON_ID_KEY: 42, PYTHON_PARENT_ID_KEY: None, PYTHON_MODULE_ID_KEY: 0}
    }
    torch_module = event("nn.Module: Linear_0", "python_function", **{PYTHON_MODULE_ID_KEY: 0})
    path.write_bytes(_trace_text([ours, torch_module]))
    assert plan_module_events(trace_parts(path)) == {}  # torch's own: the view has them


def test_the_text_is_cut_between_events_wherever_the_pieces_end(tmp_path: Path) -> None:
    stored = sorted(SAMPLE_RUN.glob(f"*{TRACE_SUFFIX}"))[0]
    text = gzip.decompress(stored.read_bytes())
    tricky = text.replace(b'"traceEvents": [', b'"traceEvents": [{"name": "a}, {b", "ph": "i"},', 1)
    path = tmp_path / "t.json"
    path.write_bytes(tricky)
    whole = list(trace_parts(path, chunk_bytes=len(tricky) + 1))
    assert [p.events is None for p in whole] == [True, False, True]  # one piece holds them all
    added = plan_module_events(whole)
    for chunk in (4096, 97):  # many pieces, some ending inside the string above
        parts = list(trace_parts(path, chunk_bytes=chunk, read_bytes=chunk))
        assert len(parts) > 100 and b"".join(p.text for p in parts) == tricky
        assert sum(len(p.events or ()) for p in parts) == len(orjson.loads(tricky)["traceEvents"])
        assert plan_module_events(parts) == added
        rewritten = b"".join(rewrite_module_events(parts, added))
        assert orjson.loads(rewritten) == orjson.loads(
            b"".join(rewrite_module_events(whole, added))
        )


# --------------------------------------------------------------------------------------------
# Captured runs, read back by the plugin


def test_a_captured_run_shows_its_modules_in_the_plugins_module_view(train, tmp_path: Path) -> None:
    prof = train(steps=6)
    (stored,) = prof.trace_files
    before = stored.read_bytes()
    result = export_tensorboard(prof.run_dir, tmp_path / "tb")
    assert stored.read_bytes() == before  # the store's file stays as it was
    (placed,) = result.trace_files
    ranges = assert_only_module_ranges_changed(stored, placed)
    assert ranges and all(e["name"].startswith(MODULE_PREFIX) for e in ranges)
    assert not any(e["name"].endswith(".backward") for e in ranges)
    (profile,) = plugin_profiles(result.run_dir).values()
    assert assert_module_view_is_ours(profile, stored) == 6  # model and its five layers


def test_the_other_views_read_the_export_as_they_read_the_store(train, tmp_path: Path) -> None:
    prof = train(steps=6)
    (stored,) = prof.trace_files
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / stored.name).write_bytes(stored.read_bytes())
    exported = export_tensorboard(prof.run_dir, tmp_path / "tb").run_dir
    (before,), (after,) = plugin_profiles(plain).values(), plugin_profiles(exported).values()
    assert "Module" not in [view.display_name for view in before.views]
    assert after.overview == before.overview
    assert after.operation_table_by_name == before.operation_table_by_name
    assert after.operation_table_by_name_input == before.operation_table_by_name_input


def test_the_sample_runs_windows_in_the_plugin(tmp_path: Path) -> None:
    result = export_tensorboard(SAMPLE_RUN, tmp_path / "tb")
    profiles = plugin_profiles(result.run_dir)
    stored = sorted(SAMPLE_RUN.glob(f"*{TRACE_SUFFIX}"))
    assert sorted(profiles) == ["1", "2"]  # span n is the n-th window
    for span, trace in zip(("1", "2"), stored, strict=True):
        assert assert_module_view_is_ours(profiles[span], trace) == 15


def test_a_module_that_would_cost_the_plugin_its_tree_is_left_out(tmp_path: Path) -> None:
    stored = sorted(SAMPLE_RUN.glob(f"*{TRACE_SUFFIX}"))[0]
    document = read_trace(stored)
    events = document["traceEvents"]
    convs = [e for e in events if e["name"] == "aten::conv2d"]
    for event in events:  # start each features.0 range inside its first operator
        if event["name"] == "nn.Module: features.0 (Conv2d)" and event["cat"] == "user_annotation":
            end = event["ts"] + event["dur"]
            op = min((o for o in convs if event["ts"] <= o["ts"] < end), key=lambda o: o["ts"])
            event["ts"] = op["ts"] + op["dur"] / 2
            event["dur"] = end - event["ts"]
    source = tmp_path / "run" / stored.name
    source.parent.mkdir()
    source.write_bytes(gzip.compress(orjson.dumps(document)))
    # Made module events, these would be dropped from the plugin's tree at every call, and
    # the module view would fail with a KeyError: the plugin would then drop the whole worker.
    result = export_tensorboard(source.parent, tmp_path / "tb")
    (profile,) = plugin_profiles(result.run_dir).values()
    names = [name for _, name, _ in module_rows(profile.get_module_view())]
    assert len(names) == 14 and "features.0 (Conv2d)" not in names


def test_a_plain_torch_profiler_trace_is_copied_as_it_is(tmp_path: Path) -> None:
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.profiler.profile() as prof:
        for _ in range(2):
            model(torch.randn(4, 8)).sum().backward()
            prof.step()
    source = tmp_path / "plain" / "host_1.1.pt.trace.json"
    source.parent.mkdir()
    prof.export_chrome_trace(str(source))
    result = export_tensorboard(source.parent, tmp_path / "tb")
    (placed,) = result.trace_files
    assert gzip.decompress(placed.read_bytes()) == source.read_bytes()
    (profile,) = plugin_profiles(result.run_dir).values()
    assert "Module" not in [view.display_name for view in profile.views]


def test_a_trace_in_chromes_bare_array_form_is_copied_as_it_is(tmp_path: Path) -> None:
    event = {"ph": "X", "cat": "user_annotation", "name": "nn.Module: model (Net)", "pid": 1,
             "tid": 1, "ts": 1.0, "dur": 5.0}  # fmt: skip
    source, placed = tmp_path / "bare.json", tmp_path / "placed.json.gz"
    source.write_bytes(orjson.dumps([event]))
    assert place_trace(source, placed) == 0
    assert gzip.decompress(placed.read_bytes()) == source.read_bytes()


def test_a_trace_with_torchs_own_module_events_is_left_as_it_is(train, tmp_path: Path) -> None:
    prof = train(steps=6, with_stack=True)
    (stored,) = prof.trace_files
    events = read_trace(stored)["traceEvents"]
    assert any(PYTHON_MODULE_ID_KEY in (e.get("args") or {}) for e in events)  # torch's
    assert any(e["name"].startswith(MODULE_PREFIX + "model (") for e in events)  # and ours
    placed = tmp_path / stored.name
    assert place_trace(stored, placed) == 0
    assert placed.read_bytes() == stored.read_bytes()
    (profile,) = plugin_profiles(tmp_path).values()
    names = [name for _, name, _ in module_rows(profile.get_module_view())]
    assert "Sequential_0" in names and "model (Sequential)" not in names


@pytest.mark.cuda
def test_a_gpu_runs_modules_carry_their_device_time(tmp_path: Path) -> None:
    import torch
    from torch import nn

    import profiler

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)).cuda()
    batches = [(torch.randn(64, 256).cuda(), torch.randint(0, 10, (64,)).cuda()) for _ in range(6)]
    schedule = profiler.schedule(wait=1, warmup=1, active=2)
    with profiler.profile(
        model, out_dir=tmp_path / "runs", run_name="gpu", schedule=schedule
    ) as prof:
        for x, y in batches:
            nn.functional.cross_entropy(model(x), y).backward()
            prof.step()
    (stored,) = prof.trace_files
    events = read_trace(stored)["traceEvents"]
    assert any(e.get("cat") == "gpu_user_annotation" for e in events)  # ranges on the GPU too
    result = export_tensorboard(prof.run_dir, tmp_path / "tb")
    (placed,) = result.trace_files
    exported = assert_only_module_ranges_changed(stored, placed)
    assert len(exported) == 8  # four modules, two steps
    (profile,) = plugin_profiles(result.run_dir).values()
    assert assert_module_view_is_ours(profile, stored) == 4
    rows = {name: row for _, name, row in module_rows(profile.get_module_view())}
    for name in ("model (Sequential)", "0 (Linear)", "2 (Linear)"):
        assert rows[name]["device_duration"] > 0, name  # kernels of the ops inside
