"""A rich progress bar for long work (plan sweeps, Monte Carlo, validation, calibration), shared by the commands.

Use it as a ``progress(done, total)`` callback::

    with progress_bar("simulating failures", unit="trials", quiet=json_out) as bar:
        result = simulate_reliability(..., progress=bar)

The bar shows only once the work has run for ``after_s`` seconds (1 s by default), draws on stderr, and stays
silent when stderr or stdout is not a terminal (pipes, files, CI logs) or when ``quiet`` (``--json``).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, Optional

AFTER_S = 1.0


def interactive() -> bool:
    """True when both stdout and stderr are terminals (a person is watching)."""
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """``bar(done, total)``: draw (or update) a bar once ``after_s`` seconds have passed; ``close()`` removes it.
    ``calls`` counts the updates, shown or not."""

    def __init__(self, label: str, unit: str = "", enabled: Optional[bool] = None, after_s: float = AFTER_S):
        self.label = label
        self.unit = unit
        self.enabled = interactive() if enabled is None else enabled
        self.after_s = after_s
        self.t0 = time.perf_counter()
        self.bar = None
        self.task = None
        self.calls = 0

    def __call__(self, done: float, total: float) -> None:
        self.calls += 1
        if not self.enabled:
            return
        if self.bar is None:
            if time.perf_counter() - self.t0 < self.after_s:
                return
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            cols = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
            if self.unit:
                cols.append(TextColumn("{task.completed:,.0f}/{task.total:,.0f} " + self.unit))
            self.bar = Progress(*cols, TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextmanager
def progress_bar(label: str, unit: str = "", quiet: bool = False,
                 after_s: float = AFTER_S) -> Iterator[ProgressBar]:
    """A :class:`ProgressBar` that is closed on exit (also on errors); silent when ``quiet``."""
    bar = ProgressBar(label, unit, enabled=False if quiet else None, after_s=after_s)
    try:
        yield bar
    finally:
        bar.close()
