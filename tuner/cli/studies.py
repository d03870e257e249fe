"""``tuner studies``: the studies in a storage, with trial counts and best values."""

from __future__ import annotations

import click
from rich.table import Table

from tuner.cli.display import number_cell
from tuner.cli.options import output_console, storage_option

__all__ = ["studies"]


@click.command()
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of studies.")
def studies(storage, as_json) -> None:
    """List the studies in a storage with trial counts and best values."""
    import dataclasses
    import json

    from tuner.storage import list_studies
    from tuner.storageurl import describe_storage

    url = storage
    infos = list_studies(storage_url=url)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
        return
    out = output_console()
    table = Table(title=describe_storage(url))
    # A study name is what users copy into --study, so it is never cut; the other columns give way.
    name_width = max((len(info.name) for info in infos), default=5)
    for column in ("study", "trials", "complete", "pruned", "failed", "running", "best value", "best acc", "best #", "convergence"):
        if column == "study":
            table.add_column(column, justify="left", min_width=min(name_width, 120), overflow="fold")
        else:
            table.add_column(column, justify="right")
    for info in infos:
        table.add_row(
            info.name,
            str(info.n_trials),
            str(info.n_complete),
            str(info.n_pruned),
            str(info.n_fail),
            str(info.n_running),
            number_cell(info.best_value),
            number_cell(info.best_val_accuracy),
            "-" if info.best_trial is None else str(info.best_trial),
            info.convergence,
        )
    out.print(table if infos else f"no studies in {describe_storage(url)}")
