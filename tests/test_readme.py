"""The README's two set-up commands stay true: CI runs the test one verbatim."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_demo_and_test_commands_and_ci_runs_the_test_one():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    demo, tests = lines[1], lines[2]
    assert demo.endswith("valuerec demo")
    assert tests.endswith("python -m pytest -q")
    assert "pip install -q torch==2.13.0 &&" in demo and "pip install -q torch==2.13.0 &&" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ci_fails_when_a_step_before_the_tests_fails():
    """Under ``set -e`` a failure before the last ``&&`` of a line does not stop the script:
    a failed install (a full disk) ran no test, and CI ended green with the linter's status.
    The line after the test command checks the line's status; here it follows a chain whose
    first step fails, as in CI."""
    run = (ROOT / ".ci" / "run").read_text().splitlines()
    tests = (ROOT / "README.md").read_text().splitlines()[2]
    after = run[run.index(tests) + 1 :]
    guard = next(line for line in after if not line.startswith("#"))
    script = f"set -euo pipefail\nfalse && true\n{guard}\necho linted\n"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert done.returncode != 0 and "linted" not in done.stdout, done
    assert "the test command failed" in done.stderr
    ok = subprocess.run(["bash", "-c", script.replace("false", "true")], capture_output=True)
    assert ok.returncode == 0 and b"linted" in ok.stdout
