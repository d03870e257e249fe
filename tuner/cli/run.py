"""``tuner run`` and ``tuner studies``."""

from __future__ import annotations

import logging
import math

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tuner.cli import INTERRUPTED_EXIT, main
from tuner.cli.options import data_option, output_console, storage_option, study_file_option, study_option


@main.command()
@click.option("--trials", "n_trials", type=int, envvar="TUNER_TRIALS", help="Finished trials the study should hold in total [default 100].")
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
    from tuner.storage import mask_url

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
    console = Console(stderr=True, quiet=quiet)
    progress = Progress(
        TextColumn("[bold]trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[best]}"),
        TextColumn("[dim]{task.fields[gain]}"),
        console=console,
        transient=False,
    )
    task = None

    def on_start(start) -> None:
        nonlocal task
        console.print(f"study [bold]{start.study_name}[/] in {start.storage}")
        console.print(f"data {start.data_source}: {start.n_train} train / {start.n_val} validation samples (test set unused)")
        if start.n_warm_started:
            console.print(f"warm start: enqueued the {start.n_warm_started} best configurations of study {start.warm_start_source}")
        if start.n_portfolio_enqueued:
            console.print(f"enqueued {start.n_portfolio_enqueued} portfolio configurations as the first trials")
        if start.n_baselines_enqueued:
            console.print(f"enqueued {start.n_baselines_enqueued} tutorial baselines")
        if start.n_finished_before:
            console.print(f"resuming: {start.n_finished_before} of {start.n_target} trials already finished")
        if config.workers > 1:
            from tuner.workers import threads_per_worker

            console.print(
                f"{config.workers} worker processes, {threads_per_worker(workers=config.workers, threads=config.threads)} TensorFlow threads each"
            )
        progress.start()
        task = progress.add_task("trials", total=start.n_target, completed=min(start.n_finished_before, start.n_target), best="", gain="")

    def on_trial_end(outcome, n_finished, best) -> None:
        progress.update(task, completed=min(n_finished, config.n_trials), best=_best_label(best))
        if verbose and outcome.reason:
            progress.console.print(f"trial {outcome.number} {outcome.state.lower()}: {outcome.reason}")

    def on_convergence(estimate) -> None:
        progress.update(task, gain=estimate.describe())

    def on_progress(state) -> None:
        progress.update(task, completed=min(state.n_finished, config.n_trials), best=_best_label(state.best))

    try:
        if config.workers > 1:
            from tuner.workers import run_workers

            result = run_workers(config, on_start=on_start, on_progress=on_progress)
        else:
            result = run_study(config, on_start=on_start, on_trial_end=on_trial_end, on_convergence=on_convergence)
    except KeyboardInterrupt:
        progress.stop()
        what = "the running trial was" if config.workers == 1 else "every worker stopped; their running trials were"
        click.echo(
            f"Interrupted: {what} recorded as failed and queued again. Resume with: tuner run --trials {config.n_trials}"
            f" --study {config.study_name!r} --storage {mask_url(config.storage_url)!r}",
            err=True,
        )
        raise SystemExit(INTERRUPTED_EXIT)
    finally:
        progress.stop()
    _print_summary(result)


def _best_label(best) -> str:
    return f"best {best.value:.4f} (acc {best.val_accuracy:.4f}, #{best.number})" if best and best.val_accuracy is not None else ""


def _print_summary(result) -> None:
    out = output_console()
    counts = result.counts
    table = Table(title=f"study {result.study_name}: {result.n_finished}/{result.n_target} finished", show_header=True)
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
    out.print(f"best trial #{best.number}: validation loss {best.value:.4f}, validation accuracy {_fmt(best.val_accuracy)}")
    params = Table(show_header=True, title="best parameters")
    params.add_column("parameter")
    params.add_column("value", justify="right")
    for name, value in best.params.items():
        params.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(params)
    out.print(f"storage: {result.storage}")


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


@main.command()
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of studies.")
def studies(storage, as_json) -> None:
    """List the studies in a storage with trial counts and best values."""
    import dataclasses
    import json

    from tuner.storage import DEFAULT_STORAGE, describe_storage, list_studies

    url = storage or DEFAULT_STORAGE
    infos = list_studies(url)
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
            _fmt(info.best_value),
            _fmt(info.best_val_accuracy),
            "-" if info.best_trial is None else str(info.best_trial),
            info.convergence,
        )
    out.print(table if infos else f"no studies in {describe_storage(url)}")
