"""The ``medssl`` command: a thin typer layer over ``medssl.api``.

User mistakes (``MedsslError``) are printed as one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import sys

from medssl.cli import commands, experiments, export, prepare, superres  # noqa: F401  (they register the commands on the app)
from medssl.cli.common import app, err_console
from medssl.errors import MedsslError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: run the app, turning user errors into one message."""
    try:
        app()
    except MedsslError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
