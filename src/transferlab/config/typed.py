"""Config values read into typed objects: a mapping checked against a dataclass (or a class's ``__init__``
signature), each value converted to its annotation, with one message per problem that names the full key,
what is wrong, and then the fix (``optimizer.lr='abc' is not a number. Fix: optimizer.lr=0.001``).

Conversions are the ones a user means and nothing more: a quoted number (``optimizer.lr='0.001'``) is a
number, ``yes``/``no``/``on``/``off``/``0``/``1`` are booleans, an integral float is an integer. A value so
converted is reported in ``changes`` (key, value), so the caller can write it back into the config it
checked (the config hash and every later reader then see the typed value). Anything else that does not
fit its annotation is a ConfigError; so is a key the dataclass lacks (with the close names, if any).

The fix in a message uses the field's ``example`` (``example()`` below), else its default, else a value
of its type.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from transferlab.errors import ConfigError

T = TypeVar("T")

#: values converted to another type than given, by dotted key (the caller writes them back)
Changes = list[tuple[str, Any]]

#: what a user's key may do with keys a dataclass lacks: refuse them, keep them (open groups such as
#: ``trainer``), or refuse only those close to a known key (typos) and keep the others (annotations)
Unknown = Literal["error", "keep", "typo"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_TYPE_EXAMPLES: dict[Any, Any] = {int: 1, float: 0.1, bool: True, str: "NAME"}


class _Mismatch(Exception):
    """A value that does not fit an annotation (the caller says which key and how to fix it)."""


def example(value: Any, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose fix in messages shows ``value`` (``default``: as for ``dataclasses.field``)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"example": value})
    return dataclasses.field(default=default, metadata={"example": value})


def as_override(value: Any) -> str:
    """``value`` as it is written on the command line: ``null``, ``true``, ``0.001``, ``[1,2]``, ``{a: 1}``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(as_override(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {as_override(v)}" for k, v in value.items()) + "}"
    return str(value)


def shown(value: Any) -> str:
    """``value`` in a message's problem statement: strings quoted, the rest as written."""
    return repr(value) if isinstance(value, (str, list, tuple, Mapping)) else as_override(value)


def describe(hint: Any) -> str:
    """What an annotation asks for, in words: ``a number``, ``an integer or null``, ``one of cosine, constant``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [as_override(v) for a in args if get_origin(a) is Literal for v in get_args(a)]
        parts += [describe(a) for a in args if get_origin(a) is not Literal]
        return ", ".join(parts[:-1]) + f" or {parts[-1]}"
    if origin is Literal:
        return "one of " + ", ".join(as_override(a) for a in args)
    if origin in (list, tuple, Sequence):
        plural = {int: "integers", float: "numbers", str: "names", bool: "true/false values"}
        return "a list" + (f" of {plural[args[0]]}" if args and args[0] in plural else "")
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping ({key: value})"
    if dataclasses.is_dataclass(hint):
        return "a group of keys"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "null"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def _example_of(hint: Any, given: Any) -> Any:
    """A value of ``hint`` for a fix, when the field gives none."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return _example_of(next(a for a in args if a is not type(None)), given)
    if origin is Literal:
        close = difflib.get_close_matches(str(given), [str(a) for a in args], n=1)
        return close[0] if close else args[0]
    if origin in (list, tuple, Sequence):
        return [_example_of(args[0], None)] if args and args[0] is not Any else []
    return _TYPE_EXAMPLES.get(hint, "...")


def _scalar(value: Any, hint: Any) -> Any:
    """``value`` as the scalar type ``hint`` (int, float, bool, str), or _Mismatch."""
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _Mismatch
    if isinstance(value, bool) or value is None or isinstance(value, (list, tuple, Mapping)):
        raise _Mismatch
    if hint is str:
        return value  # a number names things too (experiment_name=2024)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Mismatch from None
    if hint is float:
        return value if isinstance(value, (int, float)) else number
    if not math.isfinite(number) or number != int(number):  # int
        raise _Mismatch
    return int(number)


def _convert(value: Any, hint: Any, key: str, changes: Changes) -> Any:
    """``value`` as ``hint``; nested dataclasses are parsed (their errors name their own keys)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        for arg in sorted(args, key=lambda a: get_origin(a) is not Literal):  # `auto` before bool's "true"
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, changes)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise _Mismatch
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return parse(hint, value, key, changes)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if not args or (origin is tuple and args[-1] is Ellipsis):
            items = [_convert(v, args[0], key, changes) for v in value] if args else list(value)
        elif origin is tuple:
            if len(args) != len(value):
                raise _Mismatch
            items = [_convert(v, a, key, changes) for v, a in zip(value, args)]
        else:
            items = [_convert(v, args[0], key, changes) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return {k: _convert(v, args[1], f"{key}.{k}", changes) for k, v in value.items()} if args else dict(value)
    if hint in (int, float, bool, str):
        return _scalar(value, hint)
    return value  # an annotation this module does not check (a class): the caller's own check applies


def _changed(given: Any, converted: Any) -> bool:
    """Whether a conversion changed what the config holds (a quoted number, a 0/1 flag; not 1 → 1.0)."""
    if isinstance(converted, (list, tuple)) and isinstance(given, (list, tuple)):
        return len(given) != len(converted) or any(_changed(g, c) for g, c in zip(given, converted))
    if dataclasses.is_dataclass(converted) or isinstance(converted, Mapping):
        return False  # nested groups report their own leaves
    return (given != converted or isinstance(given, str) != isinstance(converted, str)
            or isinstance(given, bool) != isinstance(converted, bool))


def convert(value: Any, hint: Any, key: str, changes: Changes, fix: Any = dataclasses.MISSING) -> Any:
    """``value`` converted to ``hint``; ConfigError ``KEY=VALUE is not …. Fix: KEY=EXAMPLE`` when it does not fit."""
    try:
        converted = _convert(value, hint, key, changes)
    except _Mismatch:
        literal = get_origin(hint) is Literal
        sample = _example_of(hint, value) if literal or fix is dataclasses.MISSING else fix
        raise ConfigError(f"{key}={shown(value)} is not {describe(hint)}. Fix: {key}={as_override(sample)}") from None
    if _changed(value, converted):
        changes.append((key, json.loads(json.dumps(converted, default=str))))
    return converted


def unknown_keys_error(key: str, unknown: Sequence[str], known: Sequence[str], what: str) -> ConfigError:
    """``dataset.augmnet is not a key of dataset=digits; did you mean dataset.augment? Fix: …``."""
    lead = f"{key}." if key else ""
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), list(known), n=1)
        parts.append(f"{lead}{name}" + (f" (did you mean {lead}{close[0]}?)" if close else ""))
    return ConfigError(
        f"{', '.join(parts)}: not {'a key' if len(parts) == 1 else 'keys'} of {what}. "
        f"Fix: rename or remove {'it' if len(parts) == 1 else 'them'}"
        + (f"; the keys are {sorted(known)}." if len(known) <= 30 else ".")
    )


def _typos(unknown: Sequence[str], known: Sequence[str]) -> list[str]:
    return [name for name in unknown if difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.8)]


def check_keys(key: str, given: Mapping[str, Any], known: Sequence[str], what: str, unknown: Unknown = "error") -> None:
    """ConfigError for keys of ``given`` not in ``known`` (``unknown="typo"``: only those close to a known key)."""
    extra = [str(k) for k in given if k not in known]
    if unknown == "typo":
        extra = _typos(extra, known)
    if extra and unknown != "keep":
        raise unknown_keys_error(key, extra, known, what)


def _field_fix(field: dataclasses.Field) -> Any:
    if "example" in field.metadata:
        return field.metadata["example"]
    if field.default is not dataclasses.MISSING and field.default is not None:
        return field.default
    return dataclasses.MISSING


def parse(cls: type[T], node: Mapping[str, Any] | None, key: str, changes: Changes | None = None) -> T:
    """``node`` (a plain mapping) as the dataclass ``cls``: each key converted to its field's type.

    Hooks on ``cls``, all optional: a class method ``variant(node, key)`` picks a subclass first (a dataset's
    ``kind``); ``extra_keys`` (an ``Unknown``, default ``error``) and ``more_keys()`` (keys allowed besides
    the fields, passed on untyped) say which other keys it takes; ``what`` names it in messages; a method
    ``check(key)`` checks the values together after."""
    changes = [] if changes is None else changes
    node = {} if node is None else node
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key}={shown(node)} is not a group of keys. Fix: set its keys, e.g. {key}.name=…")
    variant = getattr(cls, "variant", None)
    cls = variant(node, key) if variant is not None else cls
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    known = [*fields, *getattr(cls, "more_keys", lambda: [])()]
    check_keys(key, node, known, getattr(cls, "what", None) or key, getattr(cls, "extra_keys", "error"))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        full = f"{key}.{name}" if key else name
        if name in node:
            values[name] = convert(node[name], hints[name], full, changes, _field_fix(field))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            fix = _field_fix(field)
            raise ConfigError(f"{full} is missing. Fix: {full}="
                              f"{as_override(fix if fix is not dataclasses.MISSING else _example_of(hints[name], None))}")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(key)
    return obj


def init_parameters(cls: type) -> dict[str, tuple[Any, Any]]:
    """The keyword parameters a class's ``__init__`` takes, with those its ``**options`` pass on to the base
    classes': ``{name: (annotation, default)}`` (``inspect.Parameter.empty`` when required)."""
    found: dict[str, tuple[Any, Any]] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - a user's class whose annotations do not resolve: its values stay untyped
            hints = {}
        passes_on = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                passes_on = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
                found.setdefault(p.name, (hints.get(p.name, Any), p.default))
        if not passes_on:
            break
    return found


def parse_arguments(cls: type, node: Mapping[str, Any], key: str, changes: Changes, what: str,
                    skip: Sequence[str] = ()) -> dict[str, Any]:
    """The keys of ``node`` (but ``skip``) as keyword arguments of ``cls``, each converted to its annotation."""
    params = init_parameters(cls)
    given = {k: v for k, v in node.items() if k not in skip}
    check_keys(key, given, list(params), what)
    out = {}
    for name, value in given.items():
        hint, default = params[name]
        fix = default if default not in (inspect.Parameter.empty, None) else dataclasses.MISSING
        out[name] = convert(value, hint, f"{key}.{name}", changes, fix)
    return out
