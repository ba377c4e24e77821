"""The Typer app, and `command`: every command's options generated from `config.OPTIONS`.

A command function takes `settings` first, then its own arguments (positional inputs). The
options of the table that the command takes are added to its signature as plain text flags;
`config.load` parses flags and `REPLAYER_*` variables the same way for every command.
Heavy modules (aioboto3, botocore) are imported inside the functions that need them.
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

import replayer
from replayer import config
from replayer.config import Option, Settings
from replayer.errors import ConfigError

__all__ = ["app", "command", "load_or_exit", "order_commands", "print_error", "sink_forms", "stderr_console"]

# How `replayer --help` lists the commands: the manual ones, the queue's, then the rest.
_ORDER = ("replay", "fetch", "redrive", "drain", "run", "status", "demo")


class _Text:
    """What Typer's coercion of a text, count or flag parameter gives, without the pydantic
    TypeAdapter Typer 0.29 builds per parameter (~60 ms of start-up for ~40 options, pydantic's
    import included): `config.load` parses the text itself. Typer's own shape is kept: None or
    () when not given, a list for a repeated option, the value click parsed otherwise."""

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        return [str(v) for v in value] if multi else value


# Parameters whose annotation is plain (str | None, list[str] | None, int counts, bool flags).
_PLAIN: set[str] = set()


def _plain_coercion(params: list[Any]) -> None:
    for param in params:
        flag = getattr(param, "is_flag", False)  # a flag's value is a bool or None: nothing to coerce
        if (param.name in _PLAIN or flag) and getattr(param, "_runtime_param", _Text) is None:
            param._runtime_param = _Text()
        if flag or getattr(param, "count", False):
            param.metavar = ""  # a switch takes no value: no <bool> or <int> in the help


class _Command(TyperCommand):
    """A command whose plain parameters skip Typer's per-parameter TypeAdapter (see `_Text`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # the help option is made here, on demand
        _plain_coercion(params)
        for param in params:
            if param.name == "help":
                param.rich_help_panel = config.PANELS[-1]  # with the other output options
        return params


class _Group(TyperGroup):
    """The app's group: its flags (--version, completion) skip the TypeAdapter too."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # the help option is made here, on demand
        _plain_coercion(params)
        return params


def _plain(annotation: Any) -> bool:
    kind = typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
    return kind in (str, int, bool, str | None, list[str] | None)


app = typer.Typer(
    name="replayer",
    cls=_Group,
    help="Rescue the DynamoDB Streams and Kinesis records that AWS Lambda discarded, before they expire.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # for the help panels; every help text is escaped (s3://BUCKET[/PREFIX])
    context_settings={"help_option_names": ["-h", "--help"]},
)


def stderr_console() -> Console:
    """Messages for people: stderr, never hard-wrapped when not a terminal (CI logs wrap themselves)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=100_000, soft_wrap=True)
    return console


def print_error(console: Console, error: object) -> None:
    """One clear line on stderr (a line per problem); the message is text, never rich markup."""
    console.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)


def sink_forms() -> str:
    """The `--to` URI forms, as the help and the docs name them."""
    return config.SINK_FORMS


def _parameter(option: Option, command: str) -> inspect.Parameter:
    """The Typer parameter of one table option: text in, parsed by `config.load`. Its help is in its
    panel, or, for a tuning option, left out (`_epilog` names it)."""
    shown: dict[str, Any] = {
        "help": escape(config.help_text(option, command, sink_forms())),
        "show_default": False,
        "rich_help_panel": option.panel or None,
        "hidden": option.tuning,
    }
    annotation: Any
    default: Any = None
    if option.count:
        annotation = Annotated[int, typer.Option(*option.flags, count=True, **shown)]
        default = 0
    elif option.metavar is None:
        annotation = Annotated[bool, typer.Option(*option.flags, **shown)]
        default = False
    else:
        kind: Any = list[str] | None if option.repeat else str | None
        annotation = Annotated[kind, typer.Option(*option.flags, metavar=option.metavar, **shown)]
    return inspect.Parameter(
        option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _doc(text: str) -> str:
    """A docstring as help: each paragraph on one line (the help wraps it to the terminal), escaped."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return escape("\n\n".join(" ".join(p.split()) for p in paragraphs))


def _epilog(options: tuple[Option, ...]) -> str:
    """Under the panels: where the variables are, and the tuning options, named (not explained)."""
    example = next((o for o in options if o.env), None)
    text = "Options are also read from REPLAYER_ variables"
    if example is not None:
        text += f" ({example.flag}: {example.env})"
    text += "; the docs' option table lists each."
    tuning = [o.flag for o in options if o.tuning]
    if tuning:
        text += f" Also: {' '.join(tuning)}"
    return escape(text)


def load_or_exit(name: str, flags: dict[str, Any]) -> Settings:
    """The command's settings, or one line per problem on stderr and exit 2."""
    from replayer.sinks import keeps_reports, sink_problem

    try:
        return config.load(name, flags, os.environ, sink_check=sink_problem, durable_check=keeps_reports)
    except ConfigError as exc:
        print_error(stderr_console(), exc)
        raise typer.Exit(2) from None


def command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `func(settings, **own)` as command `name`, with the table's options for it."""

    def register(func: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(func, eval_str=True).parameters.values())[1:]
        options = config.options_for(name)
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        panels = {panel: i for i, panel in enumerate(config.PANELS)}
        params += [_parameter(o, name) for o in sorted(options, key=lambda o: panels.get(o.panel, 0))]

        def callback(**kwargs: Any) -> None:
            flags = {o.name: kwargs.pop(o.name) for o in options}
            settings = load_or_exit(name, flags)
            try:
                func(settings, **kwargs)
            except Exception as exc:  # a mistake in the AWS set-up met outside the pre-flight: one line
                problem = _setup_problem(exc)
                if problem is None:
                    raise
                print_error(stderr_console(), problem)
                raise typer.Exit(2) from None

        callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        callback.__annotations__ = {p.name: p.annotation for p in params}
        callback.__doc__ = _doc(func.__doc__ or "")
        callback.__name__ = name
        _PLAIN.update(p.name for p in params if _plain(p.annotation))
        app.command(name, cls=_Command, epilog=_epilog(options))(callback)
        return func

    return register


def _setup_problem(exc: Exception) -> str | None:
    """`preflight.setup_problem` for botocore's errors (the SDK is not loaded for anything else)."""
    if not type(exc).__module__.startswith("botocore"):
        return None
    from replayer.cli.preflight import setup_problem

    return setup_problem(exc)


def order_commands() -> None:
    """List the registered commands in `_ORDER` (others after them, as registered)."""
    rank = {name: i for i, name in enumerate(_ORDER)}
    app.registered_commands.sort(key=lambda info: rank.get(info.name or "", len(rank)))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"replayer {replayer.__version__}")  # looked up here: importlib.metadata costs ~10 ms
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Rescue the DynamoDB Streams and Kinesis records that AWS Lambda discarded."""
