"""What every ``medssl`` command shares: the typer apps, help fixes, the resumable wrapper, option types and the
table printers."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup, TyperOption

from medssl.config import default_of
from medssl.errors import MedsslError

# Placeholders in help texts -> the registry kind whose names replace them.
_REGISTERED = {
    "{pretrain_methods}": "pretraining",
    "{labelfree_methods}": "label-free",
    "{evaluation_protocols}": "evaluation",
}


class _HelpFixes:
    """Help output of every command: flags shown as flags (typer prints ``<bool>`` after them, as if they took a
    value), and the ``_REGISTERED`` placeholders in a help text replaced by the registered names of their kind,
    looked up only when help is shown (the registered modules import torch)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if isinstance(param, TyperOption) and param.is_flag:
                param.metavar = ""
            for placeholder, kind in _REGISTERED.items():
                if param.help and placeholder in param.help:
                    from medssl import registry

                    param.help = param.help.replace(placeholder, ", ".join(registry.names(kind)))
        super().format_help(ctx, formatter)  # type: ignore[misc]


class Command(_HelpFixes, TyperCommand):
    pass


class Group(_HelpFixes, TyperGroup):
    pass


_P = ParamSpec("_P")


def resumable(command: Callable[_P, None]) -> Callable[_P, None]:
    """A training command stopped by SIGINT or SIGTERM (``medssl.engine.resume``) prints one line with the command
    that resumes it and exits 130 (SIGINT) or 143 (SIGTERM); Typer would exit 130 without a word."""

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt as exc:
            describe = getattr(exc, "describe", None)
            if describe is None:
                raise
            from medssl.engine.run_folder import is_main_process

            if is_main_process():  # DDP processes each stop; one line is enough
                err_console.print(describe(sys.argv), highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 130)) from None

    return run


def config_default(cls: type[Any], name: str) -> str:
    """``(default: <the dataclass default>)`` for the help of an option whose typer default is None because the
    config supplies it."""
    value = default_of(cls, name)
    shown = "none" if value is None else ",".join(map(str, value)) if isinstance(value, list) else value
    return f"(default: {shown}, or the --config file's {name})"


app = typer.Typer(
    cls=Group,
    help="Label-efficient medical image segmentation in 2D and 3D.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(cls=Group, help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
experiment_app = typer.Typer(
    cls=Group, help="Experiments that compare methods on the same splits.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")
out_console = Console()
err_console = Console(stderr=True)


def _version() -> str:
    try:
        return importlib.metadata.version("medssl")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        from medssl import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        out_console.print(f"medssl {_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Label-efficient medical image segmentation in 2D and 3D."""


Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an earlier output of this command (never any other folder).")
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
SkipBadCases = Annotated[
    bool,
    typer.Option(
        "--skip-bad-cases",
        help="Leave out the cases `medssl data check` reports (listed, and recorded in the run folder) instead of "
        "refusing the dataset.",
    ),
]
SkipBadInputs = Annotated[
    bool,
    typer.Option(
        "--skip-bad-inputs",
        help="Leave out the inputs that would be refused (unreadable, NaN/inf, wrong dimensionality or channels; "
        "listed at the end) instead of refusing them all.",
    ),
]


def split_list(text: str | None, kind: type[Any], option: str) -> list[Any] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise MedsslError(f"{option} must be a comma-separated list of {kind.__name__} values, not {text!r}") from None


def print_summary(summary: dict[str, dict[str, Any]], title: str, metrics: list[str] | None = None) -> None:
    table = Table(title=title)
    metrics = metrics or ["dice", "hd95", "hd", "nsd", "xor"]
    table.add_column("label")
    for m in metrics:
        table.add_column(m, justify="right")
    for label, values in summary.items():
        table.add_row(label, *[_fmt(values.get(m)) for m in metrics])
    out_console.print(table)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else json.dumps(v)
