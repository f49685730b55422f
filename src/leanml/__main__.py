"""``python -m leanml`` runs the command line."""

from leanml.cli import run

run()
