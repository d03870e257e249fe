"""The command group's behaviour: our errors become one line and an exit code, SIGTERM acts as Ctrl-C, .env fills defaults."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from tuner.errors import TunerError

__all__ = ["INTERRUPTED_EXIT", "TunerGroup", "flag_for"]

INTERRUPTED_EXIT = 130

# The library's parameters whose flag is not simply their name in kebab case.
_FLAGS = {"storage_url": "--storage", "study_name": "--study", "data_path": "--data", "trial_number": "--trial", "top_k": "--top"}


def flag_for(parameter: str) -> str:
    """The command-line flag of a library parameter named in an error's remedy."""
    return _FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


class TunerGroup(click.Group):
    """Maps our errors to one line on stderr and an exit code; SIGTERM behaves like Ctrl-C."""

    def invoke(self, ctx: click.Context) -> Any:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            _apply_env_file(self, ctx)
            return super().invoke(ctx)
        except TunerError as exc:
            click.echo(f"Error: {exc.describe(flag_for)}", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            error = _storage_failure(exc)
            if error is None:
                raise  # a bug: keep the traceback
            click.echo(f"Error: {error.describe(flag_for)}", err=True)
            ctx.exit(error.exit_code)


def _apply_env_file(group: click.Group, ctx: click.Context) -> None:
    """TUNER_* settings of ./.env (or $TUNER_ENV_FILE), below flags and the environment (see tuner/cli/envfile.py)."""
    from tuner.cli.envfile import env_file_defaults, env_file_path, read_env_file

    path, required = env_file_path(os.environ)
    settings = read_env_file(path, required=required) if path is not None else {}
    if settings:
        defaults = env_file_defaults(group, settings)
        for command, values in (ctx.default_map or {}).items():  # a caller's own default_map wins
            defaults[command] = {**defaults.get(command, {}), **values}
        ctx.default_map = defaults


def _storage_failure(exc: Exception) -> TunerError | None:
    if "sqlalchemy" not in sys.modules:  # nothing touched a database, so it cannot be a database error
        return None
    from tuner.storage import storage_failure

    return storage_failure(exc)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
