"""What every ``medssl`` command shares: the typer apps, help fixes, the resumable wrapper, option types and the
table printers."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import typer
import yaml
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup, TyperOption

from medssl.config import default_of
from medssl.errors import MedsslError
from medssl.ranks import is_main_process

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
data_app = typer.Typer(cls=Group, help="Inspect and merge datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
experiment_app = typer.Typer(
    cls=Group, help="Experiments that compare methods on the same splits.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")
# under DDP every process runs the command: only rank 0 reports results (errors still come from every process)
out_console = Console(quiet=not is_main_process())
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
Precision = Annotated[str, typer.Option("--precision", help="32-true, bf16-mixed, 16-mixed, auto.")]
PrecisionAuto = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto (bf16-mixed on a CPU with bf16 instructions, else 32-true), 32-true, bf16-mixed, 16-mixed.",
    ),
]
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


Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Set any config field, or an option of the method or system (`medssl list pretraining --options`); "
        "VALUE is read as YAML (3e-4, [0,1], true, null). Repeatable; overrides --config.",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file, or the name of a preset shipped with medssl (`medssl list presets`)."),
]


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as ``{KEY: VALUE}``, each VALUE read as YAML (``[0, 1]`` a list, ``3e-4`` a number
    once checked against its field).

    Raises:
        MedsslError: an item without ``=`` or a key, a VALUE that is no YAML, or a key given twice.
    """
    values: dict[str, Any] = {}
    for item in items or []:
        key, equals, text = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise MedsslError(f"--set takes KEY=VALUE (e.g. --set lr=3e-4), not {item!r}")
        if key in values:
            raise MedsslError(f"--set {key} is given twice")
        try:
            values[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise MedsslError(f"--set {key}: {text!r} is not a YAML value (quote text with spaces or colons)") from None
    return values


def merge_sets(flags: dict[str, Any], sets: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of an api call: the command's ``flags`` with the ``--set`` values added (the api sorts
    them into config fields and the method's or system's options, and refuses unknown ones). A key that is also a
    flag may only be set through ``--set`` when the flag is unset (None), so that no value silently wins.

    Raises:
        MedsslError: a ``--set`` key whose flag has a value.
    """
    merged = dict(flags)
    for key, value in sets.items():
        if flags.get(key) is not None:
            raise MedsslError(f"--set {key}: the command has its own option for {key}; give it there, once")
        merged[key] = value
    return merged


def split_list(text: str | None, kind: type[Any], option: str) -> list[Any] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise MedsslError(f"{option} must be a comma-separated list of {kind.__name__} values, not {text!r}") from None


#: Registry kinds whose entries have options (``medssl.systems.options``), shown by ``medssl list --options``.
OPTION_KINDS = ("pretraining", "segmentation", "label-free")


def list_options(kind: str, name: str) -> None:
    """Print the options of ``name`` of ``kind``, one line each: ``name: type = default  what it does``."""
    from medssl.systems.options import listed_options

    found = listed_options(kind, name)
    if not found:
        out_console.print("      (no options of its own)", highlight=False)
    for option in found.values():
        line = f"      {option.describe()}" + (f"  {option.doc}" if option.doc else "")
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)


def list_presets() -> None:
    """Print the presets shipped for ``--config``, with the command that reads each and its first comment line."""
    from medssl.configs import preset_command, presets

    shipped = presets()
    out_console.print("[bold]presets[/bold] (used by: --config NAME of the command shown)", highlight=False)
    width = max((len(name) for name in shipped), default=0)
    for name, about in shipped.items():
        line = f"  {name.ljust(width)}  medssl {preset_command(name)}: {about}"
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)


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
