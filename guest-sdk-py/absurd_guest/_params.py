"""Checking a task's params against a dataclass, naming the offending field.

Supported field types: ``str``, ``int``, ``float`` (ints accepted), ``bool``, ``None``,
``typing.Any``, ``list[T]``, ``dict[str, T]``, ``Optional[T]`` / ``T | None``, ``Union``,
``Literal[...]`` and nested dataclasses. A field with a default may be left out; unknown keys
are refused (as ``#[serde(deny_unknown_fields)]`` does in the Rust SDK).
"""

import dataclasses
import sys
import types
import typing

_MISSING = dataclasses.MISSING


class InvalidField(Exception):
    """Params do not match: ``path`` is the field (``inputs.ms_path``, ``items[3]``)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"field `{path}`: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"number `{value}`"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "…"
        return f"string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _type_name(tp) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             type(None): "null", list: "a list", dict: "an object"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp):
        return "an object"
    return getattr(tp, "__name__", str(tp))


def convert(tp, value, path: str = ""):
    """Checks `value` (decoded JSON) against `tp` and returns it, dataclasses built."""
    if tp is typing.Any or tp is object:
        return value
    if tp is None or tp is type(None):
        if value is not None:
            raise InvalidField(path, f"expected null, got {_describe(value)}")
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return convert(arm, value, path)
            except InvalidField as e:
                if e.path != path:
                    raise
                problems.append(_type_name(arm))
        raise InvalidField(path, f"expected {' or '.join(problems)}, got {_describe(value)}")
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        allowed = ", ".join(repr(a) for a in args)
        raise InvalidField(path, f"expected one of {allowed}, got {_describe(value)}")
    if origin in (list, typing.List) or tp is list:
        if not isinstance(value, list):
            raise InvalidField(path, f"expected a list, got {_describe(value)}")
        item = args[0] if args else typing.Any
        return [convert(item, v, _join(path, i)) for i, v in enumerate(value)]
    if origin in (dict, typing.Dict) or tp is dict:
        if not isinstance(value, dict):
            raise InvalidField(path, f"expected an object, got {_describe(value)}")
        item = args[1] if len(args) == 2 else typing.Any
        return {k: convert(item, v, _join(path, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"absurd_guest params: unsupported field type {tp!r} at `{path}`")
    raise InvalidField(path, f"expected {_type_name(tp)}, got {_describe(value)}")


def _dataclass(cls, value, path: str):
    if not isinstance(value, dict):
        raise InvalidField(path, f"expected an object, got {_describe(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise InvalidField(_join(path, key), f"unknown field (known fields: {known})")
    kwargs = {}
    for name, field in fields.items():
        where = _join(path, name)
        if name not in value:
            if field.default is _MISSING and field.default_factory is _MISSING:
                raise InvalidField(where, "missing field")
            continue
        kwargs[name] = convert(hints.get(name, typing.Any), value[name], where)
    return cls(**kwargs)


def to_json_value(value):
    """Dataclasses (results, step values) become objects; everything else is left to json."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def to_json_value_strict(value):
    """``json.dumps(default=...)``: nested dataclasses become objects; nothing else converts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
