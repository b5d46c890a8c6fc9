"""Open a trace run directory in the two peer tools, in-process, for tests.

Tests use these helpers to check that the traces trainprof writes open in:

* Holistic Trace Analysis (HTA, package ``holistictraceanalysis``, import ``hta``);
* the PyTorch TensorBoard profiler plugin (package ``torch-tb-profiler``, import
  ``torch_tb_profiler``).

Everything runs in the calling process: no network, no GUI, no TensorBoard
server, no plots. The behaviour described here was read from the installed
sources of holistictraceanalysis 0.5.0 and torch-tb-profiler 0.4.3; other
versions may differ.

Both tools can share one run directory as long as it holds nothing but trace
files: the plugin ignores files that do not look like traces, but HTA tries to
parse every ``*.json`` and ``*.gz`` file it finds there (see `hta_load`).

The peer packages are imported inside the functions, not at module level,
because importing them takes a second or two (HTA pulls in plotly). That way
importing this module, and collecting tests that use it, stays cheap.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from hta.trace_analysis import TraceAnalysis
    from torch_tb_profiler.run import Run

__all__ = [
    "TB_OVERVIEW_CATEGORIES",
    "hta_load",
    "hta_ranks",
    "hta_temporal_breakdown",
    "tb_plugin_load_run",
    "tb_plugin_overview",
    "tb_plugin_runs",
]

#: Category names of the plugin's Overview "step time breakdown", in the order
#: the page shows them (torch_tb_profiler/profiler/run_generator.py,
#: ``RunGenerator._generate_overview``). The page shows only some of them:
#: "Kernel", "Memcpy", "Memset" and "Runtime" only when the trace has GPU
#: activity (runtime, kernel, memcpy or memset events), and "Communication"
#: only when it has communication (nccl/gloo collectives). "DataLoader",
#: "CPU Exec" and "Other" are always there.
TB_OVERVIEW_CATEGORIES: tuple[str, ...] = (
    "Kernel",
    "Memcpy",
    "Memset",
    "Communication",
    "Runtime",
    "DataLoader",
    "CPU Exec",
    "Other",
)

# The plugin shows GPU metrics as text such as "44.49 %".
_PERCENT_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$")
_GPU_HEADER_RE = re.compile(r"^GPU (\d+):$")


# --------------------------------------------------------------------------
# Holistic Trace Analysis
# --------------------------------------------------------------------------


def hta_load(run_dir: Path) -> TraceAnalysis:
    """Load a trace directory the way HTA users do.

    Calls ``hta.trace_analysis.TraceAnalysis(trace_dir=str(run_dir))``, which
    parses every trace right away.

    What HTA 0.5.0 needs from the directory (hta/common/trace_file.py and
    hta/common/trace.py):

    * It loads every entry of ``os.listdir(run_dir)`` whose name ends in
      ``.gz`` or ``.json``, without looking in subdirectories
      (``create_rank_to_trace_dict_from_dir``). Every such file is taken for a
      trace, so the directory must hold nothing else with those endings: a
      stray ``manifest.json`` gets rank 0 and ``TraceAnalysis`` then fails
      (``AttributeError: 'DataFrame' object has no attribute 'cat'``). Any
      ``*.gz`` counts, ``*.tar.gz`` too. The plugin's names
      (``*.pt.trace.json.gz``) are fine.
    * The rank comes from the first line of the file that matches the regex
      ``"rank":\\s+(\\d+)`` (``create_rank_to_trace_dict``). The regex wants at
      least one whitespace character after the colon: pretty-printed JSON and
      ``json.dumps`` defaults (``"rank": 1``) work, but compact JSON
      (``"rank":1``) does not match. HTA then logs a warning and uses rank 0.
      The first match anywhere in the file wins, normally
      ``distributedInfo.rank``.
    * A file without a rank gets rank 0, and a later one silently replaces an
      earlier one. So a directory holding several rankless traces (for
      example a single-process ``tensorboard_trace_handler`` run with
      ``repeat > 1``) loads as one rank 0, picked in ``os.listdir`` order. A
      file with a rank that another file already has replaces it with a
      warning.
    * Multi-rank directories are parsed in a ``fork`` ``multiprocessing.Pool``
      (one process per rank, up to 8). ``TraceAnalysis`` offers no way to turn
      this off. The pool is closed before the constructor returns.

    HTA logs through the ``hta`` logger (for example "Parsed ... time = ...",
    and the missing-rank warning). It changes no logging configuration here:
    ``hta.configs.config.setup_logger`` runs only when an ``HtaConfig`` is
    built, and ``TraceAnalysis`` builds none.

    Args:
        run_dir: Directory holding one trace file per rank.

    Returns:
        The loaded ``TraceAnalysis``.

    Raises:
        ValueError: HTA's own error when a listed trace file cannot be read.
        Exception: Any parse error from HTA, unchanged.
    """
    from hta.trace_analysis import TraceAnalysis

    return TraceAnalysis(trace_dir=str(run_dir))


def hta_ranks(run_dir: Path | TraceAnalysis) -> list[int]:
    """Return the ranks HTA finds in a trace directory.

    Args:
        run_dir: Directory holding one trace file per rank (see `hta_load` for
            what HTA requires of it), or what `hta_load` made of one.

    Returns:
        The sorted ranks, e.g. ``[0, 1]`` for a two-rank run. A trace without a
        ``"rank": N`` entry counts as rank 0.
    """
    # Trace.get_ranks() already sorts. Sort again so this does not depend on
    # an HTA detail.
    return sorted(int(rank) for rank in _loaded(run_dir).t.get_ranks())


def hta_temporal_breakdown(run_dir: Path | TraceAnalysis) -> pd.DataFrame:
    """Return HTA's temporal breakdown (GPU idle / compute / non-compute time).

    Calls ``TraceAnalysis.get_temporal_breakdown(visualize=False)``, so no
    plotly figure is made or shown.

    HTA 0.5.0 raises ``IndexError('single positional indexer is
    out-of-bounds')`` on a trace with no GPU kernels (a CPU-only trace). That
    error is deliberately left to propagate so tests see it.

    Args:
        run_dir: Directory holding one trace file per rank, or what `hta_load`
            made of one.

    Returns:
        One row per rank, in rank order, with the columns ``rank``,
        ``idle_time(us)``, ``compute_time(us)``, ``non_compute_time(us)``,
        ``kernel_time(us)``, ``idle_time_pctg``, ``compute_time_pctg`` and
        ``non_compute_time_pctg``. The ``*_pctg`` values are percentages of
        ``kernel_time(us)``, rounded to 2 decimals.

    Raises:
        IndexError: The trace has no GPU kernels (HTA 0.5.0 behaviour).
    """
    return _loaded(run_dir).get_temporal_breakdown(visualize=False)


def _loaded(run: Path | TraceAnalysis) -> TraceAnalysis:
    """``run`` parsed by HTA: a directory is parsed now (seconds for a large trace)."""
    return hta_load(run) if isinstance(run, Path) else run


# --------------------------------------------------------------------------
# PyTorch TensorBoard profiler plugin
# --------------------------------------------------------------------------


def tb_plugin_runs(logdir: Path) -> dict[str, list[str]]:
    """Find and load the runs the plugin would show for ``logdir``.

    Run discovery calls the plugin's own
    ``TorchProfilerPlugin._get_run_dirs`` and ``_get_run_name``
    (torch_tb_profiler/plugin.py). They take any directory under ``logdir``
    (recursively, following symlinks, ``logdir`` included) that directly holds
    at least one file matching ``consts.WORKER_PATTERN``,
    ``^(.*?)(\\.\\d+)?\\.pt\\.trace\\.json(?:\\.gz)?$``, as a run. The run name
    is the path relative to ``logdir``, or ``logdir``'s basename when
    ``logdir`` itself is the run. The methods are called on a stand-in object
    because building a real ``TorchProfilerPlugin`` starts two daemon threads,
    a ``multiprocessing.Manager`` process, a temp dir and an ``atexit`` hook.

    Each run is then loaded with `tb_plugin_load_run`, so a trace the plugin
    cannot parse raises here. In the real plugin that run would just be
    missing from the UI.

    Args:
        logdir: The directory you would pass as ``tensorboard --logdir``.

    Returns:
        ``{run_name: workers}``, sorted by run name as the plugin sorts its run
        list. ``workers`` is the plugin's ``Run.workers``: the sorted worker
        names taken from the file names (``<worker>[.<span>].pt.trace.json[.gz]``),
        plus ``"All"`` when the plugin builds a distributed view (every worker
        has the same number of nccl/gloo collectives).
    """
    _import_tb_plugin()
    from torch_tb_profiler import io as tb_io
    from torch_tb_profiler.plugin import TorchProfilerPlugin

    # Same normalization as TorchProfilerPlugin.__init__.
    stand_in = SimpleNamespace(logdir=tb_io.abspath(str(logdir).rstrip("/")))
    runs: dict[str, list[str]] = {}
    for run_dir in TorchProfilerPlugin._get_run_dirs(stand_in):
        name = TorchProfilerPlugin._get_run_name(stand_in, run_dir)
        runs[name] = list(tb_plugin_load_run(Path(run_dir), name).workers)
    return dict(sorted(runs.items()))


def tb_plugin_load_run(run_dir: Path, run_name: str | None = None) -> Run:
    """Load one run directory with the plugin's parser, synchronously.

    This follows ``RunLoader.load`` and ``RunLoader._process_data``
    (torch_tb_profiler/profiler/loader.py) step by step, but without their
    ``spawn`` processes and ``multiprocessing.Queue``, in a fixed order
    (sorted file names):

    1. List the files of ``run_dir`` (not subdirectories) that match
       ``consts.WORKER_PATTERN``. Group 1 is the worker name. The optional
       numeric group 2 (``tensorboard_trace_handler`` writes a timestamp
       there) is turned into a 1-based span index per worker, by sorting the
       timestamps as strings as the plugin does.
    2. For each file, ``RunProfileData.parse`` then
       ``RunGenerator.generate_run_profile`` (the per-worker pages) and
       ``DistributedRunProfileData``.
    3. ``RunLoader._process_spans`` builds the ``"All"`` (distributed) profile
       when every worker has communication.

    Differences from the plugin, on purpose:

    * Parse errors propagate. ``_process_data`` would log them and drop the
      worker.
    * ``_process_data`` is not called, because it runs
      ``absl.logging.use_absl_handler()``, which would add absl's handler to
      the root logger of the test process.
    * No ``io.Cache``, because it starts a ``multiprocessing.Manager``
      process. Files are read straight from ``run_dir``. When the plugin has
      to re-encode a trace (non-ASCII text, bare ``N/A`` or a huge
      ``Record Window End`` event) it writes a ``*.json.gz`` copy to a private
      temp dir, never to ``run_dir`` (where HTA would pick it up). That dir is
      deleted on return, so a profile's ``trace_file_path`` may then point to
      a missing file. Only the Trace page uses that path.

    Args:
        run_dir: A directory directly holding ``*.pt.trace.json[.gz]`` files.
        run_name: Name for the run. Defaults to ``run_dir``'s basename.

    Returns:
        The plugin's ``Run``. ``run.profiles`` maps ``(worker, span)`` to a
        ``RunProfile`` (or a ``DistributedRunProfile`` for worker ``"All"``).
        ``span`` is the 1-based span index as a string, or ``"default"`` when
        the file name has no numeric part.

    Raises:
        FileNotFoundError: ``run_dir`` holds no plugin trace files.
        Exception: Any error from the plugin's parser, unchanged.
    """
    import bisect
    from collections import defaultdict

    _import_tb_plugin()
    from torch_tb_profiler import consts
    from torch_tb_profiler.profiler.data import DistributedRunProfileData, RunProfileData
    from torch_tb_profiler.profiler.loader import RunLoader
    from torch_tb_profiler.profiler.run_generator import RunGenerator
    from torch_tb_profiler.run import Run

    run_dir_str = str(run_dir)
    name = run_name if run_name is not None else Path(run_dir_str).name

    # Step 1: same as RunLoader.load (loader.py, lines 29-54).
    files: list[tuple[str, str | None, str]] = []
    spans_by_worker: dict[str, list[str]] = defaultdict(list)
    for entry in sorted(p.name for p in Path(run_dir_str).iterdir() if not p.is_dir()):
        match = consts.WORKER_PATTERN.match(entry)
        if not match:
            continue
        worker, span = match.group(1), match.group(2)
        if span is not None:
            span = span[1:]  # drop the leading "."
            bisect.insort(spans_by_worker[worker], span)
        files.append((worker, span, entry))
    if not files:
        raise FileNotFoundError(f"no *.pt.trace.json[.gz] files directly in {run_dir_str}")
    span_index = {
        (worker, span): i
        for worker, spans in spans_by_worker.items()
        for i, span in enumerate(spans, 1)
    }

    # RunLoader.__init__ makes a spawn-context Queue. Its named semaphore
    # would start multiprocessing's resource_tracker process, so build the
    # object without __init__. _process_spans needs only run_name (for log
    # messages).
    loader = RunLoader.__new__(RunLoader)
    loader.run_name, loader.run_dir, loader.caches = name, run_dir_str, None

    run = Run(name, run_dir_str)
    distributed_run = Run(name, run_dir_str)
    with tempfile.TemporaryDirectory(prefix="tb_plugin_cache_") as cache_dir:
        for worker, span, entry in files:
            index = None if span is None else span_index[(worker, span)]
            # Step 2: same as RunLoader._process_data (loader.py, lines 88-94).
            data = RunProfileData.parse(worker, index, str(Path(run_dir_str) / entry), cache_dir)
            run.add_profile(RunGenerator(worker, index, data).generate_run_profile())
            distributed_run.add_profile(DistributedRunProfileData(data))
        # Step 3: same as RunLoader.load (loader.py, lines 73-76).
        for profile in loader._process_spans(distributed_run):
            if profile is not None:
                run.add_profile(profile)
    return run


def tb_plugin_overview(
    run_dir: Path,
    worker: str | None = None,
    *,
    span: str | None = None,
) -> dict[str, Any]:
    """Return what the plugin's Overview page shows for one worker of a run.

    The numbers come from ``RunProfile.overview``, built by
    ``RunGenerator._generate_overview`` (torch_tb_profiler/profiler/
    run_generator.py). Its inputs come from ``OverallParser.aggregate``
    (profiler/overall_parser.py) and ``StepParser._parse_step``
    (profiler/event_parser.py). Each step (a ``ProfilerStep#N`` span,
    stretched to cover the GPU work it launched, or the whole CPU span when
    there are no steps) is split into disjoint slices. Categories take time in
    the order of `TB_OVERVIEW_CATEGORIES`, an earlier one winning where they
    overlap, and "Other" is whatever is left. Costs are then averaged over
    steps, so the percentages add up to 100 (give or take rounding to 2
    decimals). The plugin may drop trailing steps that launched no GPU work.

    Which events count as "DataLoader" in plugin 0.4.3:

    * The event must have ``"ph": "X"`` and ``cat`` equal to ``cpu_op`` or
      ``operator`` (compared lower-cased) (profiler/trace.py,
      ``EventTypeMap`` and ``create_trace_event``).
    * Its name must start with ``enumerate(DataLoader)#`` and end with
      ``.__next__``, or start with ``enumerate(DataPipe)#``
      (profiler/event_parser.py, ``StepParser._parse_step``).
    * ``_parse_step`` also accepts the ``user_annotation`` type, but
      ``create_trace_event`` keeps a ``user_annotation`` (or
      ``gpu_user_annotation``) event only if it is a ``ProfilerStep#N`` or a
      nccl/gloo collective. Any other one, including the
      ``enumerate(DataLoader)#...__next__`` that current torch records as
      ``user_annotation``, is dropped: it counts as neither DataLoader nor CPU
      Exec. Its time falls under "Other", unless operators nested inside it
      claim it.

    The plugin also knows only ``cat == "runtime"`` for "Runtime". Current
    Kineto traces write ``cuda_runtime`` / ``cuda_driver``, so "Runtime" is 0
    on them.

    Args:
        run_dir: A run directory (see `tb_plugin_load_run`).
        worker: Worker name as in the file names. ``None`` is allowed only
            when the run has exactly one worker (``"All"`` aside).
        span: Span key (``"1"``, ``"2"``, ... or ``"default"``). ``None`` is
            allowed only when the worker has exactly one span.

    Returns:
        A dict of plain Python values:

        * ``"worker"`` (str), ``"span"`` (str): the profile shown.
        * ``"device_type"`` (str): ``"GPU"`` or ``"CPU"``, worked out as
          ``plugin.overview_route`` does.
        * ``"steps"`` (list[str]): the step names the breakdown averages over,
          e.g. ``["551", "552"]``.
        * ``"avg_step_time_us"`` (int): "Average Step Time", rounded.
        * ``"breakdown_pct"`` (dict[str, float]): percentage of the average
          step per category, rounded to 2 decimals as the page shows it. Keys
          are the plugin's own names, a subset of `TB_OVERVIEW_CATEGORIES`
          in that order.
        * ``"breakdown_us"`` (dict[str, int]): the same in microseconds,
          rounded.
        * ``"gpu_utilization"`` (dict[int, float]): GPU id to "GPU
          Utilization" in percent (busy time over all-steps time). Empty when
          the trace has no kernels.
        * ``"gpu_metrics"`` (dict[int, dict[str, float]]): every percentage
          in the GPU Summary panel, keyed by the plugin's titles ("GPU
          Utilization", "Est. SM Efficiency", "Est. Achieved Occupancy",
          "Kernel Time using Tensor Cores").
        * ``"recommendations"`` (list[str]): the plugin's recommendation
          texts (HTML).

    Raises:
        ValueError: ``worker`` or ``span`` is ``None`` but there is more than
            one to choose from, or the requested profile does not exist.
    """
    _import_tb_plugin()
    from torch_tb_profiler.run import RunProfile

    run = tb_plugin_load_run(run_dir)
    profiles = {key: p for key, p in run.profiles.items() if isinstance(p, RunProfile)}

    if worker is None:
        workers = sorted({w for w, _ in profiles})
        if len(workers) != 1:
            raise ValueError(f"pick a worker; run {run.name!r} has {workers}")
        worker = workers[0]
    if span is None:
        spans = sorted({s for w, s in profiles if w == worker})
        if len(spans) != 1:
            raise ValueError(f"pick a span; worker {worker!r} has {spans}")
        span = spans[0]
    profile = profiles.get((worker, span))
    if profile is None:
        raise ValueError(f"no profile for worker={worker!r} span={span!r}; have {sorted(profiles)}")

    overview = profile.overview
    average = overview["performance"][0]  # {"name": "Average Step Time", ..., "children": [...]}
    children = average["children"]
    # Same test as plugin.overview_route for the "Device Type" line.
    uses_gpu = profile.has_runtime or profile.has_kernel or profile.has_memcpy_or_memset
    gpu_metrics = _parse_gpu_summary(profile.gpu_summary)
    return {
        "worker": worker,
        "span": span,
        "device_type": "GPU" if uses_gpu else "CPU",
        "steps": [str(row[0]) for row in overview["steps"]["rows"]],
        "avg_step_time_us": int(average["value"]),
        "breakdown_pct": {c["name"]: float(c["extra"]) for c in children},
        "breakdown_us": {c["name"]: int(c["value"]) for c in children},
        "gpu_utilization": {
            gpu: values["GPU Utilization"]
            for gpu, values in gpu_metrics.items()
            if "GPU Utilization" in values
        },
        "gpu_metrics": gpu_metrics,
        "recommendations": _split_recommendations(overview["recommendations"]),
    }


def _import_tb_plugin() -> None:
    """Import the plugin's modules in an order that works.

    ``torch_tb_profiler.run`` and ``torch_tb_profiler.profiler`` import each
    other. Importing ``torch_tb_profiler.run`` first fails with "cannot import
    name 'Run' from partially initialized module". Importing the ``profiler``
    package first (as ``plugin.py`` does) works, and after that any order is
    fine.
    """
    import torch_tb_profiler.profiler  # noqa: F401


def _parse_gpu_summary(summary: list[dict[str, str]] | None) -> dict[int, dict[str, float]]:
    """Turn the plugin's GPU Summary rows into numbers.

    Args:
        summary: ``RunProfile.gpu_summary`` from
            ``GPUMetricsParser.get_gpu_metrics_data_tooltip``: a list of
            ``{"title", "value"}`` rows. Each GPU starts with a
            ``"GPU <id>:"`` row, and percentages look like ``"44.49 %"``.

    Returns:
        GPU id to ``{title: percent}``. Rows that are not percentages (name,
        memory, compute capability, separators) are left out.
    """
    result: dict[int, dict[str, float]] = {}
    current: dict[str, float] | None = None
    for row in summary or []:
        header = _GPU_HEADER_RE.match(str(row.get("title", "")))
        if header:
            current = result.setdefault(int(header.group(1)), {})
            continue
        percent = _PERCENT_RE.match(str(row.get("value", "")))
        if current is not None and percent:
            current[str(row["title"])] = float(percent.group(1))
    return result


def _split_recommendations(html: str) -> list[str]:
    """Split the plugin's ``<ul><li>...</li></ul>`` recommendation HTML into items.

    Args:
        html: ``overview["recommendations"]``. ``"<ul><li>N/A</li></ul>"``
            means there are none.

    Returns:
        The item texts (they may contain HTML links), or ``[]`` for "N/A".
    """
    items = re.findall(r"<li>(.*?)</li>", html, flags=re.S)
    return [] if items == ["N/A"] else items
