"""``tuner report``: one self-contained HTML file of figures about a study."""

from __future__ import annotations

import click

from tuner.cli.options import storage_option, stored_study_option

__all__ = ["report"]


@click.command()
@stored_study_option
@storage_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default="report.html",
    show_default=True,
    envvar="TUNER_REPORT",
    help="HTML file to write [env TUNER_REPORT].",
)
def report(study_name, storage, out) -> None:
    """Write one self-contained HTML file of plotly figures about a study (opens offline)."""
    from tuner.report import build_report

    result = build_report(storage_url=storage, study_name=study_name, out=out)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    accuracy = f"; final model test accuracy {result.test_accuracy:.4f}" if result.test_accuracy is not None else ""
    click.echo(f"study {result.study_name} ({result.counts_text}): {len(result.figures)} figures{accuracy}")
    click.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB); open {result.path.as_uri()}")
