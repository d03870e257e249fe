"""``tuner export-best``: retrain a trial, score it on the test set and save it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tuner.cli.group import INTERRUPTED_EXIT
from tuner.cli.options import storage_option

if TYPE_CHECKING:
    from tuner.export import EpochProgress, ExportStart

__all__ = ["export_best"]


@click.command("export-best")
@click.option(
    "--study",
    "study_name",
    envvar="TUNER_STUDY",
    metavar="NAME",
    help="Study to export from [env TUNER_STUDY; default: the storage's only study].",
)
@storage_option
@click.option(
    "--trial", "trial_number", type=click.IntRange(min=0), metavar="N", help="Export this completed trial instead of the best one."
)
@click.option("--out", type=click.Path(), help="Export directory [default artifacts/<study>].")
@click.option(
    "--data",
    "data_path",
    envvar="TUNER_DATA",
    metavar="PATH",
    help="The data to train on [env TUNER_DATA; default: the data the study was tuned on; other data needs --allow-other-data].",
)
@click.option(
    "--refit-full/--no-refit-full", default=True, show_default=True, help="Train on the validation part too, not only on the training part."
)
@click.option("--force", is_flag=True, help="Replace an existing export in --out.")
@click.option(
    "--max-params",
    type=click.IntRange(min=1),
    metavar="N",
    help="Export the most accurate trial (on validation) among those with at most N parameters.",
)
@click.option(
    "--max-latency-ms",
    type=click.FloatRange(min=0, min_open=True),
    metavar="MS",
    help="Export the most accurate trial (on validation) among those whose CPU inference takes at most MS per sample.",
)
@click.option(
    "--allow-other-data",
    is_flag=True,
    help="Train on --data even though it is not the data the study was tuned on (model.json records both checksums).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), envvar="TUNER_THREADS", help="TensorFlow threads for this process [default: all cores]."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; only the result.")
def export_best(
    study_name, storage, trial_number, out, data_path, refit_full, force, max_params, max_latency_ms, allow_other_data, threads, quiet
) -> None:
    """Retrain the most accurate trial (or --trial N), score it once on the test set, save model.keras and model.json."""
    from tuner.errors import ConfigError
    from tuner.export import export_best as run_export

    if data_path is not None and not data_path.strip():
        raise ConfigError("--data must not be empty (leave it out to use the data the study was tuned on)")
    if trial_number is not None and (max_params is not None or max_latency_ms is not None):
        raise ConfigError("--trial cannot be combined with --max-params or --max-latency-ms")

    if threads:
        from tuner.training import configure_threads

        configure_threads(threads)
    display = _ExportDisplay(quiet=quiet)
    interrupted = False
    try:
        result = run_export(
            storage_url=storage,
            study_name=study_name,
            trial_number=trial_number,
            out=out,
            data_path=data_path,
            refit_full=refit_full,
            force=force,
            max_params=max_params,
            max_latency_ms=max_latency_ms,
            allow_other_data=allow_other_data,
            on_start=display.on_start,
            on_epoch=display.on_epoch,
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        display.stop()
    if interrupted:
        click.echo("Interrupted: nothing was written; any earlier export is unchanged.", err=True)
        raise SystemExit(INTERRUPTED_EXIT)
    click.echo(
        f"trial #{result.trial_number} of {result.study_name}: test accuracy {result.test_accuracy:.4f}, test loss {result.test_loss:.4f}"
        f" on {result.n_test} samples ({result.epochs} epochs, seed {result.seed}, {result.wall_seconds:.1f}s)"
    )
    click.echo(f"{'replaced' if result.replaced else 'wrote'} {result.model_path}")
    click.echo(f"{'replaced' if result.replaced else 'wrote'} {result.metadata_path}")


class _ExportDisplay:
    """The export's start lines on stderr and its epoch progress bar, fed by the library's callbacks."""

    def __init__(self, *, quiet: bool) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        self.progress = Progress(
            TextColumn("[bold]epochs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
        )
        self.task: TaskID | None = None

    def on_start(self, start: ExportStart) -> None:
        which = "best trial" if start.is_best else "trial"
        self.console.print(f"study [bold]{start.study_name}[/] in {start.storage}: {which} #{start.trial_number}")
        self.console.print(
            f"training {start.epochs} epochs on {start.n_train} samples of {start.data_source}; {start.n_test} test samples held out"
        )
        self.progress.start()
        self.task = self.progress.add_task("epochs", total=start.epochs, metrics="")

    def on_epoch(self, epoch: EpochProgress) -> None:
        if self.task is not None:  # epochs are reported only after on_start
            self.progress.update(self.task, completed=epoch.epoch, metrics=f"loss {epoch.loss:.4f}  acc {epoch.accuracy:.4f}")

    def stop(self) -> None:
        if self.task is not None:  # stopping a progress display that never started prints a blank line
            self.progress.stop()
