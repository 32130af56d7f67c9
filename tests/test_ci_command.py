"""CI runs exactly the README's test command (the guide's rule), and that command runs both tiers and ruff."""

from __future__ import annotations

import re

from run_helpers import ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .venv && [^\n]*)\n```", readme)
    assert len(commands) == 1, "the README shows one test command"
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert commands[0] in ci, "the last line of .ci/run is the README's test command"
    for step in ("ruff check .", "ruff format --check .", 'pytest -q -m "not slow"', "pytest -q -m slow"):
        assert step in commands[0], step
