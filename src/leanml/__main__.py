"""``python -m leanml`` runs the command line."""

from leanml.cli import main_entry

main_entry()
