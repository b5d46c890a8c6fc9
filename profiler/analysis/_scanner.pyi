"""Types of the C scanner (_scanner.c)."""

from typing import Any

def scan(
    text: Any, fields: tuple[tuple[bytes, int, Any, Any], ...], /
) -> tuple[int, list[bytearray], list[str], list[bytes], bytearray, bytearray] | None: ...
def number(codes: Any, values: list[Any], index: Any, mapping: Any, out: Any, /) -> None: ...
