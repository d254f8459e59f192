"""The package's errors: one base for everything it refuses as input.

Every error igcv-nas raises for input it cannot use -- a spec, a space file, a budget, a run
directory, a data set, a setting -- derives from :class:`IGCVError`; the command-line tools
map it, and only it, to one line on stderr and exit code 2. Anything else that escapes a
command is a bug and is reported as an internal error (exit 1; the traceback with
``--debug``). Subclasses keep the builtin base they had (``ValueError``, ``RuntimeError``), so
``except ValueError`` in callers keeps working.
"""
from __future__ import annotations


class IGCVError(Exception):
    """Base of every input error of the package (one line: the value and what is accepted)."""


class InputError(IGCVError, ValueError):
    """A value the package cannot use: a setting, a count or duration, a permutation, an
    argument of a public function."""
