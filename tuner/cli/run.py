"""``tuner run``: search hyperparameters, with a progress bar and a summary table."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tuner.cli.display import number_cell
from tuner.cli.group import INTERRUPTED_EXIT
from tuner.cli.options import data_option, output_console, storage_option, study_file_option, study_option

if TYPE_CHECKING:
    from tuner.config import RunConfig
    from tuner.convergence import Convergence
    from tuner.results import RunStart, TrialEnded
    from tuner.workers import WorkersProgress


__all__ = ["run"]


@click.command()
@click.option(
    "--trials",
    "n_trials",
    type=int,
    envvar="TUNER_TRIALS",
    help="Finished trials the study should hold in total [default 100; none with --timeout].",
)
@click.option("--timeout", type=float, envvar="TUNER_TIMEOUT", metavar="SECONDS", help="Stop starting new trials after this many seconds.")
@study_option
@storage_option
@study_file_option
@data_option
@click.option("--seed", type=int, envvar="TUNER_SEED", help="Sampler and training seed [default: the study file's].")
@click.option(
    "--threads", type=int, envvar="TUNER_THREADS", help="TensorFlow threads for this process, split between --workers [default: all cores]."
)
@click.option(
    "--workers",
    type=int,
    envvar="TUNER_WORKERS",
    help="Worker processes on this machine sharing the study [env TUNER_WORKERS; default: one per CPU core, as memory allows, at most 8].",
)
@click.option(
    "--heartbeat",
    "heartbeat_interval",
    type=int,
    envvar="TUNER_HEARTBEAT",
    metavar="SECONDS",
    help="How often a running trial reports that its worker is alive [env TUNER_HEARTBEAT; default 60].",
)
@click.option(
    "--grace-period",
    type=int,
    envvar="TUNER_GRACE_PERIOD",
    metavar="SECONDS",
    help="A trial silent this long is marked failed and retried by another worker [env TUNER_GRACE_PERIOD; default 180].",
)
@click.option(
    "--reconnect-timeout",
    type=float,
    envvar="TUNER_RECONNECT_TIMEOUT",
    metavar="SECONDS",
    help="How long to keep retrying a database that stopped answering [env TUNER_RECONNECT_TIMEOUT; default 300].",
)
@click.option(
    "--portfolio/--no-portfolio",
    default=None,
    help="Start a new study with the portfolio of published MLP recipes [default: the study file's, on].",
)
@click.option(
    "--baselines/--no-baselines",
    default=None,
    help="Enqueue the tutorial's configurations among the first trials of a new study [default on].",
)
@click.option(
    "--warm-start-from", metavar="STUDY", envvar="TUNER_WARM_START_FROM", help="Seed a new study with the best configurations of STUDY."
)
@click.option(
    "--warm-start-storage", metavar="URL", envvar="TUNER_WARM_START_STORAGE", help="Storage of --warm-start-from [default: --storage]."
)
@click.option(
    "--top", "warm_start_top", type=int, envvar="TUNER_WARM_START_TOP", help="How many of its best trials to start from [default 5]."
)
@click.option(
    "--until-converged",
    is_flag=True,
    default=None,
    envvar="TUNER_UNTIL_CONVERGED",
    help="Stop early once the best value stopped improving (see the study file's convergence settings).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every trial.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; only the summary.")
def run(
    n_trials,
    timeout,
    study_name,
    storage,
    study_file,
    data_path,
    seed,
    threads,
    workers,
    heartbeat_interval,
    grace_period,
    reconnect_timeout,
    portfolio,
    baselines,
    warm_start_from,
    warm_start_storage,
    warm_start_top,
    until_converged,
    verbose,
    quiet,
) -> None:
    """Search hyperparameters; resumes the study until it holds --trials finished trials.

    Any number of workers, here (--workers) or on other machines (the same command and --storage),
    share one study: together they stop at --trials.
    """
    import optuna

    from tuner.config import resolve_run_config
    from tuner.runner import run_study
    from tuner.storageurl import mask_url

    config = resolve_run_config(
        study_file=study_file,
        study_name=study_name,
        storage_url=storage,
        data_path=data_path,
        n_trials=n_trials,
        timeout=timeout,
        seed=seed,
        baselines=baselines,
        portfolio=portfolio,
        threads=threads,
        workers=workers,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        reconnect_timeout=reconnect_timeout,
        warm_start_from=warm_start_from,
        warm_start_storage=warm_start_storage,
        warm_start_top=warm_start_top,
        until_converged=until_converged,
    )
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices: one new model per trial is expected
    display = _RunDisplay(config, verbose=verbose, quiet=quiet)
    try:
        if config.workers > 1:
            from tuner.workers import run_workers

            result = run_workers(config=config, on_start=display.on_start, on_progress=display.on_progress)
        else:
            result = run_study(
                config=config, on_start=display.on_start, on_trial_end=display.on_trial_end, on_convergence=display.on_convergence
            )
    except KeyboardInterrupt:
        display.stop()
        what = "the running trial was" if config.workers == 1 else "every worker stopped; their running trials were"
        click.echo(
            f"Interrupted: {what} recorded as failed and queued again. Resume with: tuner run {_how_long(config)}"
            f" --study {config.study_name!r} --storage {mask_url(config.storage_url)!r}",
            err=True,
        )
        raise SystemExit(INTERRUPTED_EXIT) from None
    finally:
        display.stop()
    _print_summary(result)


class _RunDisplay:
    """The run's start lines on stderr and its progress bar, fed by the library's callbacks."""

    def __init__(self, config: RunConfig, *, verbose: bool, quiet: bool) -> None:
        self.config = config
        self.verbose = verbose
        self.console = Console(stderr=True, quiet=quiet)
        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[best]}"),
            TextColumn("[dim]{task.fields[gain]}"),
            console=self.console,
            transient=False,
        )
        self.task: TaskID | None = None

    def on_start(self, start: RunStart) -> None:
        console, config = self.console, self.config
        console.print(f"study [bold]{start.study_name}[/] in {start.storage}")
        console.print(f"data {start.data_source}: {start.n_train} train / {start.n_val} validation samples (test set unused)")
        if start.n_warm_started:
            console.print(f"warm start: enqueued the {start.n_warm_started} best configurations of study {start.warm_start_source}")
        if start.n_portfolio_enqueued:
            console.print(f"enqueued {start.n_portfolio_enqueued} portfolio configurations as the first trials")
        if start.n_baselines_enqueued:
            console.print(f"enqueued {start.n_baselines_enqueued} tutorial baselines")
        if start.n_finished_before:
            console.print(f"resuming: {start.n_finished_before} of {_target_label(start.n_target)} trials already finished")
        if config.workers > 1:
            from tuner.workers import has_lead_trial, lead_threads, threads_per_worker

            threads = threads_per_worker(workers=config.workers, threads=config.threads)
            if has_lead_trial(start, workers=config.workers):
                console.print(f"the first trial trains alone with {lead_threads(config.threads)} TensorFlow threads, then:")
            console.print(f"{config.workers} worker processes, {threads} TensorFlow threads each")
        self.progress.start()
        completed = self._completed(start.n_finished_before)
        self.task = self.progress.add_task("trials", total=start.n_target, completed=completed, best="", gain="")

    def on_trial_end(self, ended: TrialEnded) -> None:
        self._update(completed=self._completed(ended.n_finished), best=_best_label(ended.best))
        if self.verbose and ended.outcome.reason:
            self.progress.console.print(f"trial {ended.outcome.number} {ended.outcome.state.lower()}: {ended.outcome.reason}")

    def on_convergence(self, estimate: Convergence) -> None:
        self._update(gain=estimate.describe())

    def on_progress(self, state: WorkersProgress) -> None:
        self._update(completed=self._completed(state.n_finished), best=_best_label(state.best))

    def stop(self) -> None:
        self.progress.stop()

    def _completed(self, n_finished: int) -> int:
        from tuner.results import up_to_target  # optuna is loaded by now; `tuner --help` stays light

        return up_to_target(n_finished, self.config.n_trials)

    def _update(self, **fields: Any) -> None:
        if self.task is not None:  # the library reports trials only after on_start
            self.progress.update(self.task, **fields)


def _how_long(config: RunConfig) -> str:
    if config.n_trials is not None:
        return f"--trials {config.n_trials}"
    return f"--timeout {config.timeout:g}" if config.timeout is not None else ""


def _target_label(target: int | None) -> str:
    return "?" if target is None else str(target)


def _best_label(best) -> str:
    return f"best {best.value:.4f} (acc {best.val_accuracy:.4f}, #{best.number})" if best and best.val_accuracy is not None else ""


def _print_summary(result) -> None:
    out = output_console()
    counts = result.counts
    table = Table(title=f"study {result.study_name}: {result.n_finished}/{_target_label(result.n_target)} finished", show_header=True)
    for column in ("complete", "pruned", "failed", "running", "new this run", "wall time"):
        table.add_column(column, justify="right")
    table.add_row(
        str(counts["COMPLETE"]),
        str(counts["PRUNED"]),
        str(counts["FAIL"]),
        str(counts["RUNNING"]),
        str(result.new_trials),
        f"{result.wall_seconds:.1f}s",
    )
    out.print(table)
    if getattr(result, "converged", None) is not None:
        out.print(f"stopped early: converged ({result.converged.describe()}); more trials are unlikely to help")
    if result.n_retried:
        out.print(
            f"{result.n_retried} trial(s) of dead workers or interrupted runs failed and were retried (system attribute retry_history)"
        )
    best = result.best
    if best is None:
        out.print("no completed trial yet")
        return
    out.print(f"best trial #{best.number}: validation loss {best.value:.4f}, validation accuracy {number_cell(best.val_accuracy)}")
    params = Table(show_header=True, title="best parameters")
    params.add_column("parameter")
    params.add_column("value", justify="right")
    for name, value in best.params.items():
        params.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(params)
    out.print(f"storage: {result.storage}")
