"""How the commands show a probability (``classify``) or a confidence (``spot``, ``listen``): with
three digits, in their text and JSON outputs alike, so that the same window reads the same in each."""

from __future__ import annotations

DIGITS = 3


def confidence(p: float) -> float:
    """``p`` as the JSON outputs give it: a float with :data:`DIGITS` digits, e.g. 0.891."""
    return round(float(p), DIGITS)


def confidence_text(p: float) -> str:
    """``p`` as the text outputs print it, e.g. ``0.891``."""
    return f"{float(p):.{DIGITS}f}"
