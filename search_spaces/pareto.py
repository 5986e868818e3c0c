"""The trade-off a search saw: candidates no other beats on both accuracy and budget use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def pareto_front(points: Iterable[T], accuracy: Callable[[T], float], usage: Callable[[T], float]) -> list[T]:
    """The points no other is at least as accurate and at most as costly as while better on one, cheapest first (the
    more accurate first at equal use); points with equal accuracy and use are all kept."""
    every = list(points)
    pairs = [(accuracy(point), usage(point)) for point in every]
    front = [
        point
        for point, (a, u) in zip(every, pairs)
        if not any(other_a >= a and other_u <= u and (other_a, other_u) != (a, u) for other_a, other_u in pairs)
    ]
    return sorted(front, key=lambda point: (usage(point), -accuracy(point)))
