"""Options declared once: a typed dataclass field is the flag, its default, its range and its help.

A command's settings are a dataclass deriving from ``Options``; each field is made with
``option(default, help, ...)``. Building the dataclass checks every field (``ClidepError`` with
one line naming the flag), so the library and the command line refuse the same things in the
same words; ``typer_command`` turns the same fields into the Typer command's flags, so nothing
is restated there; ``to_dict`` is what a run records (compress's run.json) and ``changed`` what
``--resume`` compares. A list option (``option(..., items=int)``) is a tuple in the dataclass and
comma-separated text on the command line (``--depth 32,512``), parsed and checked entry by entry once,
here; a library call may give either.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Annotated, Any, get_type_hints

from clidep.errors import ClidepError


def option(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    above: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    items: Callable[[str], Any] | None = None,
    group: str | None = None,
    methods: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag: ``--name-with-hyphens``.

    LOW: smallest allowed value; ABOVE: the value must be greater; HIGH: largest allowed;
    CHOICES: the allowed strings. ``None`` (an optional flag not given) is always allowed.
    ITEMS makes it a list option: a tuple of entries, each converted from its text by ITEMS (int,
    float, str) and checked against the bounds; at least one, none twice. GROUP: the heading it is listed
    under in --help and the docs. METHODS: the --method values it applies to (said in its help; a value
    given with another method is refused: ``Options.refuse_other_methods``).
    """
    if methods:
        help = f"{method_list(methods)}: {help}"
    meta = {"help": help, "low": low, "above": above, "high": high, "choices": choices, "items": items}
    meta.update(group=group, methods=methods)
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# The flags the user typed, while typer_command builds a command's Options from them (empty otherwise).
_TYPED: contextvars.ContextVar[frozenset] = contextvars.ContextVar("clidep_typed_flags", default=frozenset())


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of every command's settings: each field is checked against its ``option`` metadata.

    Built from the command line it also keeps which flags the user typed (``typer_command``), so that a flag
    given at its default value is still given: ``--int4-table-bits 8 --plain-onnx`` is refused like
    ``--int4-table-bits 4 --plain-onnx``. A library call's keywords at their defaults are not (a wrapper
    passes them on freely)."""

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        object.__setattr__(self, "_typed", _TYPED.get())  # frozen: set once, before __init__ checks it
        return self

    def given(self, name: str) -> bool:
        """Whether field NAME was set: typed on the command line, or away from its default."""
        default = next(f.default for f in dataclasses.fields(self) if f.name == name)
        return name in self._typed or getattr(self, name) != default

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("items") and value is not None:
                value = entries(flag(f.name), value, f.metadata)
                object.__setattr__(self, f.name, value)  # frozen: set once, here
                for item in value:
                    _check(flag(f.name), item, f.metadata)
            else:
                _check(flag(f.name), value, f.metadata)
        self.check()

    def check(self) -> None:
        """Checks across fields (exactly one of two flags, ...); subclasses override."""

    def to_dict(self) -> dict:
        """The settings as JSON holds them (a list option as a list)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def refuse_other_methods(self, method: str) -> None:
        """An option that applies to other methods than METHOD, given a value, is refused rather than ignored
        (with a hint where METHOD is the default, which the user may not know they chose)."""
        default = next((f.default for f in dataclasses.fields(self) if f.name == "method"), None)
        for f in dataclasses.fields(self):
            methods = f.metadata.get("methods")
            if methods and method not in methods and self.given(f.name):
                hint = f" (the default method is {default}: add --method {methods[0]})" if method == default else ""
                raise ClidepError(f"{flag(f.name)} applies to {method_list(methods)} only, not {method}{hint}")

    def changed(self, stored: dict) -> list[tuple[str, Any, Any]]:
        """(flag, this value, stored value) for each field set away from its default that differs from STORED
        (a list option compared entry by entry: a run.json holds a list, or the text an older clidep kept)."""
        out = []
        for f in dataclasses.fields(self):

            def parsed(v, f=f):  # a list option's default or stored value as the tuple a field holds
                return entries(flag(f.name), v, f.metadata) if f.metadata.get("items") and v is not None else v

            value, default, was = getattr(self, f.name), parsed(f.default), parsed(stored.get(f.name))
            if f.name in stored and value != default and value != was:
                out.append((flag(f.name), _text(value), _text(was)))
        return out


def resolve(cls: type[Options], config: Options | None, options: dict) -> Options:
    """The config a library call asked for: CONFIG itself, or CLS built from OPTIONS (its fields as keywords).

    ``TypeError`` for both at once, a CONFIG of another type, or a keyword CLS has no field for.
    """
    if config is not None and (options or not isinstance(config, cls)):
        raise TypeError(f"give a {cls.__name__}, or its fields as keywords, not both")
    return config if config is not None else cls(**options)


def method_list(methods: tuple[str, ...]) -> str:
    """("auto", "grid") -> "--method auto and grid"."""
    head = ", ".join(methods[:-1])
    return f"--method {head}{' and ' if head else ''}{methods[-1]}"


def entries(name: str, value: Any, meta: dict) -> tuple:
    """A list option's VALUE (comma-separated text, or a sequence) as a tuple of entries converted by its
    ``items``; ``ClidepError`` for an entry that does not convert, no entry, or one given twice."""
    convert = meta["items"]
    given = [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else list(value)
    try:
        out = tuple(convert(x) if isinstance(x, str) else x for x in given)
    except ValueError:
        what = {int: "integers", float: "numbers"}.get(convert, "names")
        raise ClidepError(f"{name} must be comma-separated {what}, got '{_text(value)}'") from None
    if not out:
        raise ClidepError(f"{name} needs at least one entry, got '{_text(value)}'")
    refuse_duplicates(list(out), name)
    return out


def _text(value: Any) -> Any:
    """A list option's value as it is written on the command line."""
    if not isinstance(value, (tuple, list)):
        return value
    return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in value)


def _check(name: str, value: Any, meta: dict) -> None:
    """``ClidepError`` with one line saying what is allowed when VALUE breaks the field's metadata."""
    if value is None or not meta:
        return
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ClidepError(f"unknown {name} '{value}': choose {', '.join(meta['choices'])}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ClidepError(f"{name} must be a finite number, got {value}")
    above, low, high = meta["above"], meta["low"], meta["high"]
    if above is not None and not value > above:
        raise ClidepError(f"{name} must be above {_g(above)}, got {value}")
    if high is not None and (value > high or (low is not None and value < low)):
        floor = f"[{_g(low)}" if low is not None else f"({_g(above)}" if above is not None else "(-inf"
        raise ClidepError(f"{name} must be in {floor}, {_g(high)}], got {_g(value)}")
    if low is not None and value < low:
        raise ClidepError(f"{name} must be at least {_g(low)}, got {value}")


def _g(x: float) -> str:
    """A bound as written: whole numbers in full (4294967295, not 4.29e+09), others as %g."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**63 else f"{x:g}"


#: The largest seed every library a run seeds takes (numpy's legacy seeding, which Accelerate's
#: set_seed calls, stops at 2**32 - 1; torch.manual_seed at 2**64 - 1).
MAX_SEED = 2**32 - 1


def refuse_duplicates(items: list, flag_name: str) -> None:
    """``ClidepError`` when a list option names an entry twice (each entry is a row, a test or a candidate of its own)."""
    twice = sorted({str(x) for x in items if items.count(x) > 1})
    if twice:
        raise ClidepError(f"{flag_name} lists {', '.join(twice)} more than once; give each entry once")


def _names(f: dataclasses.Field) -> tuple[str, ...]:
    """A boolean that defaults to False is a plain switch (``--int8``); one that defaults to True
    gets its negation (``--optimize/--no-optimize``); any other option is named after its field."""
    if f.type in (bool, "bool") and f.default is False:
        return (flag(f.name),)
    return ()


def _cli_type(f: dataclasses.Field, hint: Any) -> Any:
    """The flag's type on the command line: a list option is its comma-separated text."""
    if not f.metadata.get("items"):
        return hint
    return str | None if f.default is None else str


def command_parameters(body: Callable[..., None]) -> list[inspect.Parameter]:
    """BODY's own parameters (its arguments and call-level flags), without the ``options`` it receives."""
    return [p for p in inspect.signature(body, eval_str=True).parameters.values() if p.name != "options"]


def typer_command(
    app, name: str, options_cls: type[Options], leading: list[inspect.Parameter], body: Callable[..., None]
) -> None:
    """Register ``clidep NAME``: LEADING parameters (arguments and call-level flags, declared with
    their Typer annotations), then one flag per field of OPTIONS_CLS. BODY receives the leading
    values by name and ``options=OPTIONS_CLS(...)``; its docstring is the command's help."""
    import typer

    hints = get_type_hints(options_cls)
    fields = dataclasses.fields(options_cls)
    context = inspect.Parameter("clidep_context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    params = [context, *leading] + [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_text(f.default),
            annotation=Annotated[
                _cli_type(f, hints[f.name]),
                typer.Option(*_names(f), help=f.metadata["help"], rich_help_panel=f.metadata.get("group")),
            ],
        )
        for f in fields
    ]
    names = {f.name for f in fields}

    def command(clidep_context: typer.Context, **values):
        # the flags given on the command line (or by their environment variables) only, so the config can tell
        # a flag given at its default from one left out (Options.given)
        source = clidep_context.get_parameter_source
        typed = {k for k in names if source(k).name not in ("DEFAULT", "DEFAULT_MAP")}
        token = _TYPED.set(frozenset(typed))
        try:
            options = options_cls(**{k: v for k, v in values.items() if k in names})
        finally:
            _TYPED.reset(token)
        body(**{k: v for k, v in values.items() if k not in names}, options=options)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = body.__doc__
    command.__name__ = name
    app.command(name)(command)
