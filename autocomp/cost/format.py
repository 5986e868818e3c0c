"""Costs written for people, one format wherever they are shown (reports, constraint messages, `autocomp cost`)."""

from __future__ import annotations


def format_number(value: float) -> str:
    """A cost for people: whole numbers with thousands separators from 100 up (MACs, bytes), else 3 digits (ms)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
