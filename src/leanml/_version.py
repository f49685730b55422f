"""The version of leanml, kept apart so that any module can import it without the package facade."""

__version__ = "0.1.0"
