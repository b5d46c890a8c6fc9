"""The ``trainprof`` command line: parse arguments, then make one call into the layers below."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from profiler.store.chrome_trace import TraceFormatError

if TYPE_CHECKING:  # the analysis is imported when a command needs it: `--help` starts fast
    from profiler.analysis.diff import RunFigures
    from profiler.analysis.gate import Gate
    from profiler.analysis.rank_summary import RankSummary
    from profiler.analysis.run import Run

app = typer.Typer(
    name="trainprof",
    help="Profile PyTorch training runs and find out why a step is slow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _flag(*names: str, help: str) -> Any:
    """An on/off option, shown in ``--help`` without typer's ``<bool>`` value column."""
    return typer.Option(*names, help=help, metavar="")


# Exit status 1 is kept for a tripped gate (``--fail-above``), so a CI job can tell "slower"
# from "could not tell": every other failure is 2.
EXIT_GATE_TRIPPED = 1
EXIT_BAD_INPUT = 2


def _fail(exc: BaseException | str, *, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Report a user-facing error in one line and exit with ``code``."""
    _error(exc)
    raise typer.Exit(code)


@app.callback()
def _main() -> None:
    """Profile PyTorch training runs and find out why a step is slow."""


@app.command()
def demo(
    steps: Annotated[int, typer.Option(min=1, help="Training steps to run.")] = 30,
    out: Annotated[Path, typer.Option(help="Trace store root.")] = Path("traces"),
    run_name: Annotated[
        str, typer.Option(help="Run name (replaces an earlier demo run).")
    ] = "demo",
    serve: Annotated[
        bool, _flag("--dashboard", help="Then serve the dashboard on the run.")
    ] = False,
    host: Annotated[str, typer.Option(help="Dashboard interface (with --dashboard).")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Dashboard port (with --dashboard).")
    ] = 8050,
) -> None:
    """Profile a small CNN with a slow input pipeline (synthetic data, no downloads)."""
    from rich.progress import Progress

    from profiler.demo import run_demo

    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("training the demo CNN", total=steps)
            prof = run_demo(
                steps=steps,
                out_dir=out,
                run_name=run_name,
                on_step=lambda done: progress.update(task, completed=done),
            )
    except (ValueError, OSError) as exc:
        _fail(exc)
    console.print(f"[green]profiled {steps} steps[/] into [bold]{prof.run_dir}[/]")
    for path in prof.trace_files:
        console.print(f"  trace  {path}")
    console.print(f"  steps  {prof.store.steps_path}")
    console.print(f"  run    {prof.store.run_meta_path}")
    if serve:
        _serve(out, host, port, run=run_name)
    else:
        console.print("Open a trace in https://ui.perfetto.dev or chrome://tracing,")
        console.print(f"or see it in the dashboard: trainprof dashboard {out}")


NoCache = Annotated[
    bool,
    _flag("--no-cache", help="Read the trace files, not their columnar cache; write none."),
]


def _location(text: str, *, empty_ok: bool = False) -> Path:
    """A path argument as the readers take it: a local path, or an fsspec URL
    (``s3://bucket/prefix/run``) as its local copy, refreshed from the store."""
    from profiler.store.remote import RemoteStoreError, local_root

    try:
        return local_root(text, empty_ok=empty_ok)
    except RemoteStoreError as exc:
        raise typer.BadParameter(str(exc)) from None


def _as_urls(value: Any) -> Any:
    """``value`` with every path into a URL's local copy given as that URL (``s3://...``)."""
    from profiler.store.remote import as_url

    if isinstance(value, str):
        return as_url(value)
    if isinstance(value, dict):
        return {key: _as_urls(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_urls(item) for item in value]
    return value


def _root_location(text: str) -> Path:
    """A trace root argument: as :func:`_location`, and a URL with no run yet is an empty
    root (the dashboard shows runs as they arrive)."""
    return _location(text, empty_ok=True)


def _error(message: BaseException | str) -> None:
    """One ``error: ...`` line on stderr (a bad file: ``error: <file>: <problem>``)."""
    console.print("[red]error:[/]", escape(str(message)), highlight=False, soft_wrap=True)


Dask = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDR",
        help="Summarise the trace files on this Dask cluster (tcp://scheduler:8786; its "
        "workers must reach the files at the same paths), or 'local' for worker processes "
        "here. Without it, many files (32+ needing work) go to local worker processes when "
        "Dask is installed: pip install 'trainprof[dask]'.",
    ),
]


@dataclass(frozen=True)
class _Summaries:
    """One PATH's per-rank summaries, in load order, and its files' errors."""

    summaries: list[RankSummary]
    errors: list[TraceFormatError]


def _summarise_reporting(
    paths: Sequence[Path], sides: Sequence[str], *, cache: bool, dask: str | None,
    by_shape: bool = False,
) -> list[_Summaries | None]:  # fmt: skip
    """Each path's per-rank summaries (every file of every path fanned out at once, see
    ``profiler.analysis.fanout``), each file that cannot be read reported on stderr (with the
    run of a diff it belongs to: ``sides``); None for a path that does not exist, or a single
    file that cannot be read. A bad setting or an unusable --dask ends the command: exit 2.
    """
    from profiler.analysis.fanout import DaskUnavailable, summarize_files
    from profiler.analysis.guards import text_limit
    from profiler.analysis.rank_summary import in_run_order
    from profiler.analysis.table import find_trace_files

    try:
        text_limit(None)  # said once, before any file
        listed = [
            _files_or_error(find_trace_files, path, side)
            for path, side in zip(paths, sides, strict=True)
        ]
        results = summarize_files(
            [file for files in listed for file in files or ()],
            dask=dask,
            by_shape=by_shape,
            cache=cache,
            progress=True,
        )
    except (DaskUnavailable, ValueError) as exc:
        _fail(exc)
    groups: list[_Summaries | None] = []
    for path, side, files in zip(paths, sides, listed, strict=True):
        mine, results = results[: len(files or ())], results[len(files or ()) :]
        errors = [r for r in mine if isinstance(r, TraceFormatError)]
        for error in errors:
            _error(f"{error}{_side(side)}")
        done = [r for r in mine if not isinstance(r, TraceFormatError)]
        single_failed = path.is_file() and not done
        groups.append(
            None if files is None or single_failed else _Summaries(in_run_order(done), errors)
        )
    return groups


def _files_or_error(find: Any, path: Path, side: str) -> list[Path] | None:
    try:
        files: list[Path] = find(path)
    except FileNotFoundError as exc:
        _error(f"{exc}{_side(side)}")
        return None
    return files


def _side(side: str) -> str:
    return f" (in the {side} run)" if side else ""


FailAbove = Annotated[
    float | None,
    typer.Option(
        "--fail-above",
        min=0,
        metavar="PCT",
        help="Gate: exit 1 when the figure is more than PCT percent worse (larger) than the "
        "baseline's; the verdict is one 'gate: ...' line on stderr.",
    ),
]
Metric = Annotated[
    str | None,
    typer.Option(
        "--metric",
        metavar="NAME",
        help="What the gate compares (with --fail-above): step_time (the mean, default), "
        "step_time_p50, step_time_p90, step_time_max, data_wait, forward, backward, optimizer, "
        "a step category (kernel, memcpy, dataloader, cpu_exec...), peak_memory.",
    ),
]


@app.command()
def summary(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Trace files, run directories or roots; or URLs (s3://bucket/prefix/run).",
            parser=_location,
            metavar="PATH",
        ),
    ],
    json: Annotated[bool, _flag("--json", help="Print trainprof.summary/1 JSON.")] = False,
    no_cache: NoCache = False,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            metavar="BASE",
            help="Gate against this run (with --fail-above).",
            parser=_location,
        ),
    ] = None,
    fail_above: FailAbove = None,
    metric: Metric = None,
    by_shape: Annotated[
        bool, _flag("--by-shape", help="Top ops per name and input shapes (record_shapes=True).")
    ] = False,
    dask: Dask = None,
) -> None:
    """Report the bottlenecks of traces: step breakdown, GPU, top ops and kernels, advice; and
    the runs' step logs (every step: step time, data wait, phase split, memory), which is all
    a run recorded without deep capture (schedule=None, --light-only) has.

    With --baseline and --fail-above, also gate the PATHs (pooled, as one run) against BASE:
    exit status 1 when past the threshold. Exit status 2 if any file could not be read or
    analysed (the others are still reported, each bad one named on stderr as
    ``error: <file>: <problem>``), if there is neither a readable trace nor a step log, or if
    the gate could not compare.
    """
    from profiler.analysis.summary import step_log_runs, summarize_ranks

    if (baseline is None) != (fail_above is None):
        missing = "--fail-above PCT" if fail_above is None else "--baseline BASE"
        given = "--baseline" if fail_above is None else "--fail-above"
        raise typer.BadParameter(f"a gate needs both: add {missing}", param_hint=given)
    metric_name = _gate_metric(fail_above, metric)
    bases = [] if baseline is None else [baseline]
    found = _summarise_reporting(
        [*paths, *bases], [""] * len(paths) + ["baseline"] * len(bases),
        cache=not no_cache, dask=dask, by_shape=by_shape,
    )  # fmt: skip
    groups, base_group = found[: len(paths)], found[-1] if bases else None
    summaries = [s for group in groups if group is not None for s in group.summaries]
    runs = step_log_runs(paths)
    report = summarize_ranks(summaries, runs=runs)
    if not report["traces"] and report["step_logs"] is None:
        _fail(f"no readable trace under {', '.join(map(str, paths))}")
    gate = None
    base, bad_base = (None, False) if baseline is None else _gate_base(baseline, base_group)
    if base is not None and fail_above is not None:
        from profiler.analysis.gate import check_gate

        new = _figures(summaries, runs)
        gate = check_gate(base, new, threshold_pct=fail_above, metric=metric_name)
        report["gate"] = gate.to_dict()
    _emit(_as_urls(report), json, "render_summary")
    bad = bad_base or any(group is None or group.errors for group in groups)
    _finish(gate, bad_input=bad)


def _gate_metric(fail_above: float | None, metric: str | None) -> str:
    """The metric to gate on; a usage error (exit 2) for one unknown, or without --fail-above."""
    from profiler.analysis.gate import DEFAULT_METRIC, METRICS

    if metric is not None and fail_above is None:
        raise typer.BadParameter("a gate needs --fail-above PCT", param_hint="--metric")
    if metric is not None and metric not in METRICS:
        known = ", ".join(METRICS)
        raise typer.BadParameter(
            f"unknown metric {metric!r}; known: {known}", param_hint="--metric"
        )
    if fail_above is not None and not math.isfinite(fail_above):
        raise typer.BadParameter(f"{fail_above} is no percentage", param_hint="--fail-above")
    return metric or DEFAULT_METRIC


def _gate_base(baseline: Path, group: _Summaries | None) -> tuple[RunFigures, bool]:
    """The baseline run's figures for ``summary``'s gate, and whether a file of it could not be
    read; exit 2 when it has neither a readable trace nor a step log."""
    from profiler.analysis.summary import step_log_runs

    runs = step_log_runs([baseline])
    if group is None or not (group.summaries or any(run.steps() for run in runs)):
        _fail(f"{baseline}: no readable trace (the baseline run)")
    return _figures(group.summaries, runs), bool(group.errors)


def _figures(summaries: Sequence[RankSummary], runs: Sequence[Run]) -> RunFigures:
    """One side of a diff or a gate, from its per-rank summaries and step logs."""
    from profiler.analysis.diff import pooled_figures

    return pooled_figures([s.totals for s in summaries], [s.device for s in summaries], runs)


def _finish(gate: Gate | None, *, bad_input: bool) -> None:
    """Say the gate's verdict in one line on stderr, then exit: 2 for input that could not be
    read (or a gate that could not compare), 1 for a tripped gate, else 0."""
    if gate is not None:
        style = "yellow" if not gate.decided else "bold red" if gate.tripped else "green"
        console.print(f"[{style}]gate:[/]", escape(gate.reason), highlight=False, soft_wrap=True)
    if bad_input or (gate is not None and not gate.decided):
        raise typer.Exit(EXIT_BAD_INPUT)
    if gate is not None and gate.tripped:
        raise typer.Exit(EXIT_GATE_TRIPPED)


@app.command()
def diff(
    base: Annotated[
        Path, typer.Argument(help="The baseline trace or run.", parser=_location, metavar="BASE")
    ],
    new: Annotated[
        Path,
        typer.Argument(
            help="The trace or run to compare with it.", parser=_location, metavar="NEW"
        ),
    ],
    json: Annotated[bool, _flag("--json", help="Print trainprof.diff/1 JSON.")] = False,
    no_cache: NoCache = False,
    fail_above: FailAbove = None,
    metric: Metric = None,
    dask: Dask = None,
) -> None:
    """Compare two traces or runs: step time, categories, ops and kernels, per step, and the
    always-on step logs (every step) when both runs have them (runs recorded with step logs
    only are compared by those).

    With --fail-above, exit status 1 when NEW's --metric is more than PCT percent worse than
    BASE's. Exit status 2 if a file of either run could not be read (each is named on stderr
    with the run it belongs to; the diff is still printed from the files that could), if a run
    has neither a readable trace nor a step log, if the two share nothing to compare, or if
    the gate could not compare.
    """
    from profiler.analysis.diff import diff_figures
    from profiler.analysis.gate import check_gate
    from profiler.analysis.run import Run

    metric_name = _gate_metric(fail_above, metric)
    sides = {"base": base, "new": new}
    runs = {side: Run(path) for side, path in sides.items()}
    found = _summarise_reporting(list(sides.values()), list(sides), cache=not no_cache, dask=dask)
    loaded = {side: group or _Summaries([], []) for side, group in zip(sides, found, strict=True)}
    # A run recorded with --light-only / schedule=None has step logs and no trace.
    empty = [side for side, g in loaded.items() if not g.summaries and not runs[side].steps()]
    for side in empty:
        _error(f"{sides[side]}: no readable trace (the {side} run of the diff)")
    if empty:
        raise typer.Exit(EXIT_BAD_INPUT)
    figures = {side: _figures(g.summaries, [runs[side]]) for side, g in loaded.items()}
    traced = all(f.totals.steps for f in figures.values())
    if not traced and any(f.step_log is None for f in figures.values()):
        _fail("nothing to compare: one run has no trace steps and one has no step logs")
    result = diff_figures(figures["base"], figures["new"])
    gate = None
    if fail_above is not None:
        gate = check_gate(
            figures["base"], figures["new"], threshold_pct=fail_above, metric=metric_name
        )
        result["gate"] = gate.to_dict()
    _emit(result, json, "render_diff")
    _finish(gate, bad_input=any(g.errors for g in loaded.values()))


@app.command(
    context_settings={  # everything from the command's first word on is the command's
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
    options_metavar="[OPTIONS] -- COMMAND [ARGS]...",
)
def run(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Trace store root.")] = Path("traces"),
    run_name: Annotated[
        str | None, typer.Option(help="Run name; every rank writes into it (default: a timestamp).")
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            metavar="WAIT,WARMUP,ACTIVE[,REPEAT]|anomaly[:FACTOR]",
            help="Deep-capture windows, as profiler.schedule (default: 1,1,3,1), or 'anomaly' "
            "for a window after each step slower than FACTOR (default 2) x the median, as "
            "profiler.on_anomaly.",
        ),
    ] = None,
    light_only: Annotated[
        bool, _flag("--light-only", help="Per-step metrics only: no deep capture, no trace.")
    ] = False,
) -> None:
    """Profile an unmodified training script: trainprof run [OPTIONS] -- python train.py ARGS.

    Every Python process of the command profiles itself from its first DataLoader batch or
    optimizer step (torchrun's ranks each into the run, one step log and trace per rank). The
    command's output and exit status are its own (127: not found); trainprof adds one line on
    stderr, where the run went. Exit status 2: bad options.
    """
    from profiler.launch import LaunchError, launch, plan_run

    command = list(ctx.args)
    if not command:
        _fail("no command to run: trainprof run [OPTIONS] -- python train.py ARGS...")
    try:
        config = plan_run(out, run_name, schedule=schedule, light_only=light_only)
    except (ValueError, OSError) as exc:
        _fail(exc)
    try:
        outcome = launch(command, config)
    except LaunchError as exc:
        _fail(exc, code=exc.exit_status)
    if outcome.run_dir is None:
        line = "no process trained (no optimizer step, no DataLoader batch): nothing recorded"
    else:
        line = f"run {outcome.state or 'unknown'}: {outcome.run_dir}"
    console.print(f"trainprof: {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(outcome.exit_status)


@app.command("export-tensorboard")
def export_tensorboard(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory, or torch.profiler trace file(s).")
    ],
    logdir: Annotated[Path, typer.Option("--logdir", help="TensorBoard log directory.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Run name in TensorBoard (default: RUN_DIR's).")
    ] = None,
) -> None:
    """Write a run's scalars, advice and traces where TensorBoard reads them: LOGDIR/<run>/.

    Re-exporting replaces the earlier export. Exit status 2: the run cannot be read (no change).
    """
    from profiler.export.tensorboard import ExportError
    from profiler.export.tensorboard import export_tensorboard as export

    try:
        result = export(run_dir, logdir, run_name=name)
    # A bad run; no tensorboard; an unwritable logdir; a bad --name.
    except (ExportError, TraceFormatError, ImportError, OSError, ValueError) as exc:
        _fail(exc)
    console.print(
        f"[green]exported[/] {result.steps} steps and {result.windows} capture window(s) "
        f"into [bold]{result.run_dir}[/]"
    )
    console.print(f"view it: tensorboard --logdir {logdir}")


@app.command()
def capture(
    run_dir: Annotated[Path, typer.Argument(help="The live run's directory.")],
    steps: Annotated[
        int | None,
        typer.Option(min=1, max=100, help="Steps to record (default 3), after a warmup step."),
    ] = None,
    rank: Annotated[
        int | None, typer.Option(min=0, help="Only this rank (default: every rank).")
    ] = None,
) -> None:
    """Ask a running session to capture its next steps now (a trace file, like any window).

    Writes RUN_DIR/meta/capture (or capture.RANK); the session looks for it about once a
    second and opens a window at its next step outside one. Exit status 2: not a live run,
    or a run started with schedule=None (light metrics only), which never starts Kineto.
    """
    from profiler.store.capture_request import DEFAULT_REQUEST_STEPS, write_request
    from profiler.store.liveness import run_state
    from profiler.store.run_files import read_run_record

    found = read_run_record(run_dir)  # running while any rank is
    if found.meta is None:
        _fail(f"{run_dir}: {found.problem or 'no meta/run.json: not a trainprof run'}")
    state = run_state(found.meta)
    if state.status != "running":
        _fail(f"{run_dir}: the run is {state.status}, not running: nothing to capture")
    config = found.meta.get("config")
    if isinstance(config, dict) and config.get("schedule", {}) is None:
        _fail(
            f"{run_dir}: the run has schedule=None (light metrics only) and never starts "
            "Kineto; start it with a schedule to capture on request"
        )
    try:
        path = write_request(run_dir, steps=steps, rank=rank)
    except (OSError, ValueError) as exc:
        _fail(exc)
    who = "every rank" if rank is None else f"rank {rank}"
    console.print(
        f"[green]asked[/] {who} to capture the next {steps or DEFAULT_REQUEST_STEPS} step(s) "
        f"({path.name}); the trace lands in {run_dir}"
    )


@app.command()
def dashboard(
    root: Annotated[
        Path,
        typer.Argument(
            help="Trace store root: every run under it; or a URL (s3://bucket/prefix).",
            parser=_root_location,
            metavar="ROOT",
        ),
    ] = Path("traces"),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8050,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="HOST",
            help="Also answer requests naming HOST (any port); repeatable. Requests naming any "
            "other host than localhost, 127.0.0.1, [::1] and the --host address get a 400 "
            "(DNS rebinding). Bound to 0.0.0.0, name every host you reach it by.",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            metavar="ADDR",
            help="Make the ranks' per-file summaries for the Distributed page and the "
            "Timeline's ranks on this Dask cluster (tcp://scheduler:8786, or 'local'): "
            "pip install 'trainprof[dask]'.",
        ),
    ] = None,
) -> None:
    """Serve the Dash dashboard over every run under ROOT (each page deep-links ?run=NAME)."""
    if not root.is_dir():
        _fail(f"{root}: no such directory")
    if dask is not None:
        from profiler.analysis.fanout import DaskUnavailable, require_dask

        try:
            require_dask()
        except DaskUnavailable as exc:
            _fail(exc)
    _serve(root, host, port, allow_hosts=tuple(allow_host or ()), dask=dask)


def _serve(
    root: Path, host: str, port: int, run: str | None = None, allow_hosts: tuple[str, ...] = (),
    dask: str | None = None,
) -> None:  # fmt: skip
    """Serve the dashboard over ``root`` until interrupted, opening on ``run`` if given.

    Requests must name ``localhost``, a loopback address, the address served on (unless it
    is a wildcard such as 0.0.0.0) or one of ``allow_hosts`` as their host.
    """
    try:
        from dashboard.app import create_app, run_href
        from dashboard.security import LOCAL_HOSTS, WILDCARD_HOSTS, host_name
    except ImportError as exc:
        _fail(f"the dashboard needs dash, dash-ag-grid and plotly ({exc}): pip install trainprof")
    url = f"http://{host}:{port}{run_href('/', run)}"
    console.print(f"serving runs under [bold]{root}[/] at [bold]{url}[/] (Ctrl+C stops)")
    # A wildcard is no name a browser sends: the user must name the hosts they use.
    wildcard = host_name(host) in WILDCARD_HOSTS
    if wildcard and not allow_hosts:
        console.print(
            "[yellow]listening on every interface, but answering only to localhost: name the "
            "hosts you reach it by with --allow-host HOST[/]"
        )
    bound = [] if wildcard else [host]
    extra = [name for name in (*bound, *allow_hosts) if host_name(name) not in LOCAL_HOSTS]
    # Only the options given: tests stand in a create_app of fewer parameters.
    options: dict[str, Any] = {"allowed_hosts": extra} if extra else {}
    if dask:
        options["dask"] = dask
    app = create_app(root, **options)
    try:
        app.run(host=host, port=port, debug=False)
    except OSError as exc:  # the port is taken, or the interface does not exist
        _fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")


def _emit(result: dict[str, Any], as_json: bool, renderer: str) -> None:
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from profiler.export import terminal

    out = Console()
    for renderable in getattr(terminal, renderer)(result):
        out.print(renderable)


if __name__ == "__main__":
    app()
