"""Rich progress bars for long loops and the summary table every command ends with."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

T = TypeVar("T")

console = Console()
"""Summaries and results go to stdout."""
status_console = Console(stderr=True)
"""Progress bars and warnings go to stderr, so stdout stays clean for piping."""


def progress_bar(*extra_columns: Any) -> Progress:
    """A rich ``Progress`` with the project's standard columns (description, bar, n/total, rate, ETA).

    Extra columns (e.g. ``TextColumn("{task.fields[loss]}")``) go before the timers.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=status_console,
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


def print_summary(title: str, rows: Mapping[str, Any]) -> None:
    """Print a two-column table of ``rows`` (name -> value) to stdout."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(Text(str(key)), Text(str(value)))
    console.print(table)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a table with a header row to stdout."""
    table = Table(*headers, title=title, title_justify="left")
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    console.print(table)


def _labelled(label: str, style: str, message: str) -> None:
    # Text, not markup: a message's own brackets (``pip install 'clsp[trt]'``, ``[batch,1,16,16]``) stay as written.
    status_console.print(Text.assemble((label, style), " ", str(message)), soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    """Print a one-line warning to stderr."""
    _labelled("warning:", "yellow", message)


def print_error(message: str) -> None:
    """Print a one-line error to stderr."""
    _labelled("error:", "red", message)


def note(message: str) -> None:
    """Print a one-line note to stderr: something clsp decided that the user should know."""
    _labelled("note:", "cyan", message)
