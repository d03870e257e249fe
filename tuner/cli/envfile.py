"""Settings from a ``.env`` file in the working directory, ranked below the real environment.

Precedence: flags > environment > ``.env`` > study file > defaults. The file's TUNER_* values
become click's ``default_map``, which click consults after the command line and the environment,
so nothing is written into ``os.environ``. Only TUNER_* names are taken: the same file holds the
compose stack's POSTGRES_* settings, and a ``.env`` that came with a cloned directory must not set
PATH, LD_PRELOAD or PYTHONPATH for this process or the workers it starts. ``${NAME}`` expands from
the file and the environment, so ``TUNER_STORAGE`` can reuse the stack's ``POSTGRES_PASSWORD``.
``TUNER_ENV_FILE`` names another file (which must then exist); set empty, it turns the file off.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from tuner.errors import ConfigError

__all__ = ["ENV_FILE", "ENV_FILE_VARIABLE", "env_file_path", "read_env_file", "env_file_defaults"]

ENV_FILE = ".env"
ENV_FILE_VARIABLE = "TUNER_ENV_FILE"
PREFIX = "TUNER_"


def env_file_path(environ: Mapping[str, str]) -> tuple[Path | None, bool]:
    """The dotenv file to read (None: turned off) and whether it must exist (it was named)."""
    named = environ.get(ENV_FILE_VARIABLE)
    if named is None:
        return Path(ENV_FILE), False
    return (Path(named).expanduser(), True) if named.strip() else (None, False)


def read_env_file(path: Path, *, required: bool = False) -> dict[str, str]:
    """The TUNER_* settings of a dotenv file; empty when there is no such file and it is not ``required``.

    Empty values count as unset, as click treats empty environment variables.
    """
    from dotenv import dotenv_values

    try:
        if not path.exists():
            if required:
                raise ConfigError(f"{ENV_FILE_VARIABLE} names {path}, which does not exist")
            return {}
        if not path.is_file():
            raise ConfigError(f"{path} is not a file; remove it or make it a dotenv file of NAME=value lines")
        values = dotenv_values(path, interpolate=True)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not UTF-8 text") from None
    return {name: value for name, value in values.items() if name.startswith(PREFIX) and value}


def env_file_defaults(group: click.Group, settings: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A ``default_map`` giving each command's options the values of their TUNER_* variables in ``settings``."""
    defaults: dict[str, dict[str, Any]] = {}
    for name, command in group.commands.items():
        for param in command.params:
            envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
            value = next((settings[v] for v in envvars if v in settings), None)
            if value is not None and param.name is not None:
                defaults.setdefault(name, {})[param.name] = value
    return defaults
