"""The ``tuner`` command line: thin shells around library calls. Only this package prints."""

from __future__ import annotations

import click

from tuner.cli import dashboard, export_best, pareto, predict, report, run, studies
from tuner.cli.group import TunerGroup

__all__ = ["main"]


@click.group(cls=TunerGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tuner")
def main() -> None:
    """Hyperparameter search for Keras MLPs, stored in SQL and resumable.

    \b
    Typical session:
      tuner run --trials 100      search (resumes if the study exists)
      tuner studies               list studies and their best values
      tuner export-best           train the best trial and score it on the test set
      tuner predict --model DIR img.png
    """


# Core libraries are imported inside the commands, so that ``tuner --help`` stays fast.
main.add_command(run.run)
main.add_command(studies.studies)
main.add_command(export_best.export_best)
main.add_command(predict.predict)
main.add_command(pareto.pareto)
main.add_command(dashboard.dashboard)
main.add_command(report.report)
