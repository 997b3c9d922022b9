"""The README stays true: CI runs its test command, and its configuration reference is current.

After adding a configuration key, refresh the reference with
``LEADFLOW_UPDATE_README=1 python -m pytest tests/test_readme.py``.
"""

import os
import re
from pathlib import Path

from leadflow import config as config_module

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START = "<!-- config-reference:start (generated from config.py; tests/test_readme.py keeps it current) -->"
END = "<!-- config-reference:end -->"


def _code_lines(text):
    return {line.strip() for line in re.findall(r"```(?:sh|console)?\n(.*?)```", text, re.S)
            for line in line.splitlines()}


def test_ci_runs_the_readme_test_command():
    """.ci/run's last command is, verbatim, the README's test command."""
    script = (REPO / ".ci" / "run").read_text().strip().splitlines()
    command = script[-1].strip()
    assert "pytest" in command
    assert command in _code_lines(README.read_text())


def test_readme_has_a_run_command_that_serves():
    """The first command of the README installs leadflow and starts `leadflow serve`."""
    lines = [line for line in _code_lines(README.read_text()) if "pip install" in line]
    assert any(line.endswith("leadflow serve") for line in lines)


def test_configuration_reference_is_current():
    """The configuration table in the README is the one the schema generates."""
    text = README.read_text()
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    expected = f"{START}\n{config_module.reference_markdown()}\n{END}"
    if os.environ.get("LEADFLOW_UPDATE_README"):
        README.write_text(before + expected + after)
        text = README.read_text()
    assert expected in text, "README configuration reference is stale; see this module's docstring"
