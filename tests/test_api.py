"""The visible Python API: every name ``tuner`` exports resolves, and every command has help text."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import tuner
from tests.helpers import FIXTURES, REPO_ROOT
from tuner.cli import main


@pytest.mark.parametrize("name", tuner.__all__)
def test_every_exported_name_resolves(name):
    assert getattr(tuner, name) is not None


def test_lazy_names_and_all_agree():
    assert set(tuner.__all__) - {"__version__"} == set(tuner._MODULE_OF)


def test_internals_are_not_exported():
    assert not {"build_model", "mnist_style", "mask_url", "open_storage"} & set(tuner.__all__)


def test_public_entry_points_document_their_use():
    for name in ("run_study", "resolve_run_config", "load_study_file", "export_best", "predict_digits", "pareto_front", "build_report"):
        doc = getattr(tuner, name).__doc__ or ""
        assert "Example" in doc and "Args" in doc, name


@pytest.mark.parametrize("name", [name for name in tuner.__all__ if inspect.isfunction(getattr(tuner, name))])
def test_public_functions_take_keyword_arguments_only(name):
    # Keywords keep call sites readable and let a parameter be added or reordered without breaking callers.
    positional = [
        parameter.name
        for parameter in inspect.signature(getattr(tuner, name)).parameters.values()
        if parameter.kind not in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)
    ]
    assert not positional, f"{name} takes {positional} positionally"


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert (main.commands[command].help or "").strip()
    assert "Usage:" in result.output and len(result.output.strip().splitlines()) > 2


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    """The README's example, run as written (its paths point at the repository's fixtures from tmp_path)."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## The Python API") :]
    code = section[section.index("```python\n") + len("```python\n") : section.index("\n```", section.index("```python"))]
    code = code.replace('"tests/fixtures/', f'"{FIXTURES}/')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")} | {"TUNER_ENV_FILE": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "predicted:" in completed.stdout and "test accuracy" in completed.stdout
    assert (tmp_path / "artifacts" / "example" / "model.json").is_file()
