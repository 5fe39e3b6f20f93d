"""What `run` shows on the terminal: the live progress bars and the run's summary table."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from localcloud.run_report import RunReport
from localcloud.stack import LocalCloud


def run_with_progress(cloud: LocalCloud, console: Console) -> RunReport:
    columns = (
        TextColumn("{task.description:<15}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("fetched {task.fields[fetched]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            entity: progress.add_task(entity, total=None, fetched=0)
            for entity in cloud.settings.resource_list
        }

        def update(step: str, entity: str, count: int, total: int | None) -> None:
            task = tasks.get(entity)
            if task is None:
                return
            if step == "fetched":
                progress.update(task, fetched=count, total=total)
            else:
                progress.update(task, completed=count)

        report = cloud.run(update)
        for entity, task in tasks.items():
            counts = report.entities.get(entity, {})
            progress.update(task, total=counts.get("fetched", 0), completed=_loaded(counts))
    return report


def _loaded(counts: dict[str, Any]) -> int:
    stored = counts.get("stored", {})
    return int(min(stored.values(), default=0)) + int(counts.get("quarantined", 0))


def print_report(console: Console, report: RunReport, cloud: LocalCloud) -> None:
    sinks = sorted({sink for counts in report.entities.values() for sink in counts["stored"]})
    # one column per step, the sinks side by side in it: fits an 80-column terminal
    table = Table(
        title=f"run {report.run_id}",
        caption=f"written and stored per sink: {' / '.join(sinks)}" if len(sinks) > 1 else None,
        box=box.SIMPLE_HEAD,  # no vertical rules: six columns of 1000s fit 80 characters
        pad_edge=False,
    )
    table.add_column("resource", no_wrap=True)
    for column in ("fetched", "published", "quarantined", "written", "stored"):
        table.add_column(column, justify="right", no_wrap=True)
    for entity, counts in report.entities.items():
        table.add_row(
            entity,
            str(counts["fetched"]),
            str(counts["published"]),
            str(counts["quarantined"]),
            " / ".join(str(counts["written"].get(sink, 0)) for sink in sinks),
            " / ".join(str(counts["stored"].get(sink, 0)) for sink in sinks),
        )
    console.print(table)
    unchanged = {name: c.get("unchanged", 0) for name, c in report.entities.items()}
    if any(unchanged.values()):  # a line, not a column: the table fits 80 columns
        listed = ", ".join(f"{name} {count}" for name, count in unchanged.items())
        console.print(f"not published, every sink already stores them (unchanged): {listed}")
    fanned = {name: c.get("work_items", 0) for name, c in report.entities.items()}
    if any(fanned.values()):
        listed = ", ".join(f"{name} {count}" for name, count in fanned.items() if count)
        console.print(f"fanned out to ingest_worker (work items): {listed}")
    if report.chaos is not None:
        injected = ", ".join(f"{name} x{times}" for name, times in report.chaos.items())
        console.print(f"chaos injected: {injected}")
    colour = "green" if report.status == "succeeded" else "red"
    verdict = report.timings.get("verdict_s")
    console.print(
        f"[{colour} bold]{report.status}[/] in {report.timings['pipeline_s']:.1f} s"
        + (
            f", verdict at {verdict:.1f} s ({report.verdict_trigger or 'schedule'})"
            if verdict is not None
            else ""
        )
        + f" (total {report.timings['total_s']:.1f} s); Lambda logs: {cloud.log_path}"
    )
    if report.event is not None:
        console.print(
            f"EventBridge event [bold]{report.event.get('detail-type')}[/] "
            f"({report.event.get('source')}, id {report.event.get('id')}) received by a "
            "subscriber, with the run's counts"
        )
    for error in report.errors:
        console.print(f"[red]- {error}[/]")
