"""Data loaders for attnzoo's tasks.

Every task reads data that an ordinary package install provides; nothing is
downloaded at run time.  When the package a task needs is missing, its loader
raises :class:`MissingDataError` with a one-line message naming the command
that installs it.
"""


class MissingDataError(RuntimeError):
    """A task's data package is not installed; the message says how to install it."""


__all__ = ["MissingDataError"]
