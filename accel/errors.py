"""The one exception type for bad input from a user."""
from __future__ import annotations


class InputError(Exception):
    """Bad input (a missing or empty file, a number out of range, a prompt a pipeline lacks): the ``accel``
    command prints it as one line and exits with code 2, before or without losing any finished work."""
