"""One progress bar for every long loop (rich), off when not wanted."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.progress import Progress

T = TypeVar("T")


def track(
    items: Iterable[T],
    total: int,
    show: bool,
    label: str,
    describe: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Yield ``items``, advancing a transient bar; ``describe(item)`` names the current step."""
    if not show:
        yield from items
        return

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            if describe is not None:
                bar.update(task, description=describe(item))
            yield item
            bar.advance(task)
