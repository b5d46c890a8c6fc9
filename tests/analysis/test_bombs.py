"""Files that would make the reader blow up: a gzip that inflates to a gigabyte, one event of
a gigabyte, brackets nested millions deep. Each is refused within a block or two of its bound,
in a bounded amount of memory (measured with tracemalloc, never with a clock).

The bombs are gzip members of a megabyte of text repeated (a member compresses to ~1 KB), so
a 1 GiB bomb is ~1 MB on disk and is written in milliseconds.
"""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from profiler.analysis import decode
from profiler.analysis.guards import MAX_TEXT_BYTES
from profiler.analysis.table import load_trace
from profiler.store.chrome_trace import TraceFormatError

MiB = 1024**2
SMALL_CAP_BYTES = 32 * MiB
MEMORY_BOUND_BYTES = 64 * MiB


def bomb(path: Path, head: bytes, fill: bytes, total_mib: int) -> Path:
    """``head`` then ``fill`` repeated to ``total_mib`` MiB of text, as gzip members."""
    member = gzip.compress(fill * (MiB // len(fill)), 9)
    with path.open("wb") as file:
        file.write(gzip.compress(head))
        for _ in range(total_mib):
            file.write(member)
    return path


BOMBS = {
    "whitespace": (b"", b" \n"),
    "whitespace in the events array": (b'{"traceEvents": [', b" "),
    "one giant string": (b'{"traceEvents": [{"ph": "X", "name": "', b"x"),
    "a string of cuts": (b'{"traceEvents": [{"ph": "X", "name": "', b"},{"),
    "one giant key's value": (b'{"other": "', b"x"),
    "nested arrays": (b"", b"["),
    "nested args": (b'{"traceEvents": [{"ph": "X", "args": {"a": ', b'[{"b": '),
}


def refused(path: Path, **options: object) -> tuple[str, int]:
    """The problem load_trace says, and the peak of Python's allocations while it said it."""
    tracemalloc.start()
    try:
        with pytest.raises(TraceFormatError) as raised:
            load_trace(path, cache=False, **options)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return raised.value.problem, peak


@pytest.mark.parametrize("kind", BOMBS)
def test_a_gigabyte_bomb_is_refused_in_bounded_memory(tmp_path: Path, kind: str) -> None:
    path = bomb(tmp_path / "bomb.json.gz", *BOMBS[kind], total_mib=1024)
    assert path.stat().st_size < 2 * MiB
    problem, peak = refused(path, max_text_bytes=SMALL_CAP_BYTES)
    assert peak < MEMORY_BOUND_BYTES, (kind, peak, problem)
    assert any(
        words in problem
        for words in (
            "more than 32 MiB of JSON text: refused",
            "with no break between two events",
            "levels deep",
            "no JSON: the text is only whitespace",
        )
    ), problem


def test_the_text_limit_is_checked_while_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader stops a block past the limit: it never inflates the rest."""
    path = bomb(tmp_path / "bomb.json.gz", b"", b" ", total_mib=1024)
    blocks: list[int] = []
    real: Callable[..., object] = decode.TextReader.__iter__

    def counted(reader: decode.TextReader) -> object:
        for block in real(reader):  # type: ignore[attr-defined]
            blocks.append(len(block))
            yield block

    monkeypatch.setattr(decode.TextReader, "__iter__", counted)
    problem, _ = refused(path, max_text_bytes=SMALL_CAP_BYTES)
    assert problem.startswith("more than 32 MiB of JSON text: refused")
    assert SMALL_CAP_BYTES - decode._READ_BYTES < sum(blocks) <= SMALL_CAP_BYTES


def test_one_event_is_refused_past_its_bound_at_the_default_text_limit(tmp_path: Path) -> None:
    path = bomb(tmp_path / "bomb.json.gz", *BOMBS["one giant string"], total_mib=1024)
    problem, peak = refused(path)
    assert problem == (
        "16 MiB of text from byte 16 with no break between two events: "
        "an event over 16 MiB is not a trace's"
    )
    assert peak < 4 * 16 * MiB


@pytest.mark.slow
def test_a_gigabyte_of_whitespace_at_the_default_limit(tmp_path: Path) -> None:
    """Under the default 16 GiB limit a 1 GiB bomb is inflated to its end (~2-8 s), a block
    at a time, and refused for what it holds: nothing."""
    assert 1024 * MiB < MAX_TEXT_BYTES
    path = bomb(tmp_path / "bomb.json.gz", b"", b" ", total_mib=1024)
    problem, peak = refused(path)
    assert problem == "no JSON: the text is only whitespace"
    assert peak < 8 * MiB
