"""``tuner pareto``: accuracy against cost."""

from __future__ import annotations

import json

import click
from rich.table import Table

from tuner.cli.options import output_console, storage_option, stored_study_option

__all__ = ["pareto"]


@click.command()
@stored_study_option
@storage_option
@click.option(
    "--objectives",
    help="Comma-separated axes, all minimised: val_loss, params, latency (CPU ms per sample) [default: the study file's objectives].",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pareto(study_name, storage, objectives, as_json) -> None:
    """List the Pareto-optimal trials: no other trial is better on every objective."""
    from tuner.pareto import pareto_front
    from tuner.provenance import StudyProvenance
    from tuner.storage import load_study
    from tuner.studyfile import NETWORK_SIZE_PARAMETERS

    study = load_study(storage_url=storage, study_name=study_name)
    provenance = StudyProvenance.from_study(study)
    depth, width = NETWORK_SIZE_PARAMETERS[provenance.family if provenance else "mlp"]
    if objectives is None:
        objectives = ",".join(provenance.objectives if provenance else StudyProvenance.objectives)
    front = pareto_front(study=study, objectives=[name.strip() for name in objectives.split(",") if name.strip()])
    if as_json:
        click.echo(json.dumps([point.__dict__ for point in front], indent=2))
        return
    table = Table(title=f"Pareto front of {study.study_name} ({objectives})")
    for column in ("trial", "val loss", "val acc", "params", "latency ms/sample", f"{depth.removeprefix('n_')} x {width}"):
        table.add_column(column, justify="right")
    for point in front:
        table.add_row(
            str(point.number),
            f"{point.val_loss:.4f}",
            "-" if point.val_accuracy is None else f"{point.val_accuracy:.4f}",
            "-" if point.n_params is None else f"{point.n_params:,}",
            "-" if point.latency_ms is None else f"{point.latency_ms:.4f}",
            f"{point.params.get(depth, '?')} x {point.params.get(width, 0)}",
        )
    output_console().print(table)
