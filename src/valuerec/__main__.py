"""``python -m valuerec``: the ``valuerec`` command, for environments without its script."""

from valuerec.cli import run

if __name__ == "__main__":
    run()
