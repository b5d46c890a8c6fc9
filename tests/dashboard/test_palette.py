"""One colour per category on every page, and one template on every figure."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from dashboard.figures import diff, distributed, memory, overview, palette, tables, timeline
from dashboard.figures.palette import CATEGORY_COLORS, FONT_FAMILY, TEMPLATE

FIGURES = Path(diff.__file__).resolve().parent
_HEX = re.compile(r"#[0-9a-fA-F]{6}\b")


def test_a_category_has_the_same_colour_in_the_breakdown_and_on_the_timeline() -> None:
    shared = set(overview.CATEGORY_COLORS) & set(timeline.KIND_COLORS)

    assert {"kernel", "memcpy", "memset", "runtime"} <= shared
    for category in shared:
        assert (
            overview.CATEGORY_COLORS[category]
            == timeline.KIND_COLORS[category]
            == (CATEGORY_COLORS[category])
        )
    assert overview.CATEGORY_COLORS["cpu_exec"] == timeline.KIND_COLORS["cpu_op"]


def test_two_categories_never_share_a_colour() -> None:
    # cpu_exec (the breakdown's name) and cpu_op (the trace's) are one category.
    colours = {c: v for c, v in CATEGORY_COLORS.items() if c != "cpu_op"}
    assert len(set(colours.values())) == len(colours)
    assert not set(palette.PHASE_COLORS.values()) - {palette.YELLOW} & set(colours.values())
    assert palette.PHASE_COLORS["data_wait"] == CATEGORY_COLORS["dataloader"]
    assert palette.WORSE_COLOR not in palette.RANK_COLORS  # a straggler stands out


def test_the_old_colour_names_still_import_and_agree_with_the_palette() -> None:
    assert diff.BASE_COLOR == palette.BASE_COLOR and diff.NEW_COLOR == palette.NEW_COLOR
    assert diff.SLOWER_COLOR == palette.WORSE_COLOR and diff.FASTER_COLOR == palette.BETTER_COLOR
    assert distributed.STRAGGLER_COLOR == palette.WORSE_COLOR
    assert timeline.OTHER_COLOR == palette.GREY == CATEGORY_COLORS["other"]


def test_no_figure_module_spells_a_colour_of_its_own() -> None:
    spelled = {
        path.name: _HEX.findall(path.read_text(encoding="utf-8"))
        for path in FIGURES.glob("*.py")
        if path.name != "palette.py"
    }
    assert {name: found for name, found in spelled.items() if found} == {}


def test_figures_are_drawn_with_the_dashboard_template() -> None:
    steps = pd.DataFrame(
        {"rank": [0, 1], "step": [1, 1], "work_us": [10.0, 12.0], "comm_wait_us": [2.0, 1.0]}
    )
    figures = [
        overview.empty_figure("nothing"),
        overview.step_breakdown_figure([{"step": 1, "kernel_us": 5.0}]),
        overview.step_metrics_figure([{"step": 1, "rank": 0, "dur_us": 5.0}]),
        tables.top_bar_figure([{"name": "aten::mm", "total_us": 3.0}], "total_us", "op"),
        diff.category_diff_figure(
            [{"category": "kernel", "base": 1.0, "new": 2.0, "delta": 1.0, "delta_pct": 100.0}]
        ),
        distributed.wait_work_figure(steps, stragglers=[1]),
        memory.memory_figure([], None),
    ]
    for figure in figures:
        assert figure.layout.template.layout.font.family == FONT_FAMILY
        assert list(figure.layout.template.layout.colorway) == list(TEMPLATE.layout.colorway)
    bars = figures[-2].data
    assert {bar.marker.color for bar in bars if "straggler" in bar.name} == {palette.WORSE_COLOR}


def test_the_timeline_dict_carries_the_template() -> None:
    empty = SimpleNamespace(lanes=[])
    drawn = timeline.timeline_figure(empty)

    assert drawn["layout"]["template"]["layout"]["font"]["family"] == FONT_FAMILY
    assert timeline._layout([], "r")["template"]["layout"]["font"]["family"] == FONT_FAMILY


def test_kernel_types_take_their_category_colour_and_overlaps_are_hatched() -> None:
    rows = [
        {"kernel_type": "COMMUNICATION", "sum_us": 5.0},
        {"kernel_type": "COMPUTATION", "sum_us": 3.0},
        {"kernel_type": "COMPUTATION overlapping COMMUNICATION", "sum_us": 1.0},
        {"kernel_type": "MEMORY", "sum_us": 1.0},
    ]

    pie = tables.kernel_type_figure(rows).data[0]

    kernel, comm, copy = (CATEGORY_COLORS[c] for c in ("kernel", "communication", "memcpy"))
    assert list(pie.marker.colors) == [comm, kernel, kernel, copy]
    assert [bool(shape) for shape in pie.marker.pattern.shape] == [False, False, True, False]
