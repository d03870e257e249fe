"""``tuner dashboard``: optuna-dashboard on a study storage."""

from __future__ import annotations

import click

from tuner.cli.options import storage_option

__all__ = ["dashboard"]


@click.command()
@storage_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="TUNER_DASHBOARD_HOST",
    help="Address to listen on; 0.0.0.0 exposes the dashboard to your network [env TUNER_DASHBOARD_HOST].",
)
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="TUNER_DASHBOARD_PORT",
    help="Port to listen on; 0 picks a free one [env TUNER_DASHBOARD_PORT].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every HTTP request.")
def dashboard(storage, host, port, verbose) -> None:
    """Serve optuna-dashboard on the study storage (safe while 'tuner run' writes to it)."""
    from tuner.dashboard import prepare_dashboard

    server = prepare_dashboard(storage_url=storage, host=host, port=port, log_requests=verbose)
    studies = "1 study" if len(server.studies) == 1 else f"{len(server.studies)} studies"
    click.echo(f"optuna-dashboard for {server.storage} ({studies}: {', '.join(server.studies)})")
    click.echo(f"open {server.url}   (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("dashboard stopped", err=True)
