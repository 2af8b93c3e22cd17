"""Rich progress bars that show on a terminal and stay silent in CI or when asked to."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(enabled: bool) -> Progress:
    """A Progress on stderr; disabled unless ``enabled`` and stderr is a terminal."""
    show = enabled and sys.stderr.isatty()
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not show, transient=False,
    )
