"""Options shared by several commands; each reads its TUNER_* environment variable through click."""

from __future__ import annotations

import click

from tuner.storageurl import DEFAULT_STORAGE

__all__ = ["storage_option", "study_option", "stored_study_option", "study_file_option", "data_option", "output_console"]

storage_option = click.option(
    "--storage",
    envvar="TUNER_STORAGE",
    metavar="URL",
    default=DEFAULT_STORAGE,
    help=f"SQLAlchemy URL of the study database [env TUNER_STORAGE; default {DEFAULT_STORAGE}].",
)
study_option = click.option(
    "--study", "study_name", envvar="TUNER_STUDY", metavar="NAME", help="Study name [env TUNER_STUDY; default: the study file's name]."
)
# Commands that read a study (rather than create one) default to the storage's only study.
stored_study_option = click.option(
    "--study", "study_name", envvar="TUNER_STUDY", metavar="NAME", help="Study name [env TUNER_STUDY; default: the storage's only study]."
)
study_file_option = click.option(
    "--study-file",
    envvar="TUNER_STUDY_FILE",
    type=click.Path(dir_okay=False),
    help="Study definition (TOML) [env TUNER_STUDY_FILE; default studies/mnist_mlp.toml].",
)
data_option = click.option(
    "--data",
    "data_path",
    envvar="TUNER_DATA",
    metavar="PATH",
    help=(
        "A directory of the four MNIST IDX files, an .npz, a CSV table (or a folder with train.csv and test.csv) or a folder"
        " of class folders of images [env TUNER_DATA; default: the study's dataset, downloaded by Keras]."
    ),
)


def output_console():
    """A console for results on stdout; piped output gets wide lines instead of truncated table cells."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)
