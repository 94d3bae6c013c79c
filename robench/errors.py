"""User-facing errors: one line that names the problem and the fix.

The CLI turns a ``RobenchError`` into ``error: <message>`` on stderr and exit code 2, with no
traceback. Library callers can catch it like any exception.
"""
from __future__ import annotations


class RobenchError(Exception):
    """A problem with the user's input or environment (not a bug in robench)."""


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A short hint listing the valid choices, closest first."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid choices: {', '.join(sorted(choices)) or '(none)'}"
