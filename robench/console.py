"""What every click command of robench shares: bad input as one line and exit 2, and logging.

A module of its own so that ``robench/cli.py`` can import the command modules that live beside
the code they drive (``reports/commands.py``, ``zoo/commands.py``) without those importing it back.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from robench.errors import RobenchError


#: ``robench --traceback ...`` (or ROBENCH_TRACEBACK=1): show the full trace of an error
TRACEBACK_ENV = "ROBENCH_TRACEBACK"


def show_traceback() -> bool:
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input, or user code that fails: one line on stderr naming the problem (and the fix, where
    robench knows it), exit code 2, no traceback unless ``--traceback`` asks for one."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RobenchError as exc:
            if show_traceback():
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # the reader went away (robench list | head): not an error of ours
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush is quiet
            finally:
                sys.exit(0)
        except Exception as exc:  # noqa: BLE001 - user code (a model, a defense) failed somewhere unexpected
            if show_traceback():
                traceback.print_exc()
            click.echo(f"error: {one_line(exc)} (rerun as robench --traceback ... to see where)", err=True)
            sys.exit(2)

    return wrapper


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
