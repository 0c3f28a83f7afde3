"""The README's two set-up commands stay true: CI runs the test one verbatim."""

from __future__ import annotations

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
