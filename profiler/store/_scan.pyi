"""Types of the C scans of Kineto's text (_scan.c)."""

from typing import Any

def engine_starts(
    raw: Any, needle: bytes, wanted: set[int] | frozenset[int], /
) -> dict[int, float]: ...
