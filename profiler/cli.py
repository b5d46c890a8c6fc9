"""The ``trainprof`` command line: parse arguments, then make one call into the layers below."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="trainprof",
    help="Profile PyTorch training runs and find out why a step is slow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _fail(exc: BaseException) -> NoReturn:
    """Report a user-facing error in one line and exit with status 1."""
    console.print("[red]error:[/]", escape(str(exc)), highlight=False)
    raise typer.Exit(1)


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
    console.print("Open a trace in https://ui.perfetto.dev or chrome://tracing.")


if __name__ == "__main__":
    app()
