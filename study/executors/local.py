"""In-process execution, one cell after another, with a progress bar (the default; best on CPU and in tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from study.executors.base import RunSummary

if TYPE_CHECKING:
    from study.prepare import SweepContext
    from study.store import Store


def progress_bar(**kw) -> Progress:
    """done/total, the current cell, elapsed time and ETA; goes quiet when output is not a terminal."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[cell]}"), **kw)


class LocalExecutor:
    def run(self, ctx: "SweepContext", store: "Store", *, retry_failed: bool = False, wait: bool = True) -> RunSummary:
        from study.runner import run_cells

        cells = ctx.plan.unique_cells()
        summary = RunSummary()
        with progress_bar(transient=False) as bar:
            task = bar.add_task(ctx.sweep.name, total=len(cells), cell="")
            run_cells(ctx, store, cells, retry_failed=retry_failed,
                      on_start=lambda c: bar.update(task, cell=c.describe()),
                      on_cell=lambda c, outcome: (summary.add(outcome), bar.advance(task)))
            bar.update(task, cell="")
        return summary
