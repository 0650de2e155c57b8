"""Errors a user can cause; the command-line tool prints them as one line, without a traceback."""


class AlgnetError(Exception):
    """Bad input, a missing file, an unusable checkpoint: anything the user can fix."""
