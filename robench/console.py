"""What every click command of robench shares: bad input as one line and exit 2, and logging.

A module of its own so that ``robench/cli.py`` can import the command modules that live beside
the code they drive (``reports/commands.py``, ``zoo/commands.py``) without those importing it back.
"""
from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from robench.errors import RobenchError


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input: one line on stderr naming the problem and the fix, exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RobenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
