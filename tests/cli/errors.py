"""Shared check of the CLI's error promise: exit 2 and exactly one ``mmalign: error:`` line."""

from __future__ import annotations


def one_line(code: int, err: str, *needles: str) -> str:
    """Assert a one-line user error containing every needle; return the line."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mmalign: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
