"""The text side of the config: durations, sizes and endpoints, ``${env:…}`` expansion, strict YAML loading, and
pydantic's errors turned into one ``path.to.key: what was expected`` line each (STYLE: config errors)."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?")


def show(value: Any) -> str:
    """A value as it would look in YAML, for 'got ...' in error lines."""
    if value is None or isinstance(value, (bool, str)):
        return json.dumps(value, ensure_ascii=False)  # null, true, false, "text"
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, (list, tuple)) else repr(value)


def parse_duration(text: str) -> float:
    """``500ms``, ``5s``, ``2m``, ``1h``, ``90d`` or Go-style ``1h30m`` → seconds; a bare number has no unit, so no."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text.strip()):
        raise ValueError(f'expected a duration like "1s" or "500ms", got {show(text)}')
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text.strip()))


def parse_size(value: str | int) -> int:
    """``512KiB``, ``16MiB``, ``1GiB`` (also decimal ``KB``/``MB``/``GB``) or a plain integer of bytes → bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f'expected a size like "16MiB" or "512KiB", got {show(value)}')
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or ""])


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:4317``) → (host, port); ValueError with the config wording otherwise."""
    host, sep, port = endpoint.rpartition(":") if isinstance(endpoint, str) else ("", "", "")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""
    if not sep or not host or not port.isdigit() or any(c in host for c in "/[] "):
        raise ValueError(f"expected host:port, got {show(endpoint)}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"expected a port between 1 and 65535, got {show(endpoint)}")
    return host, int(port)


class FieldErrors(ValueError):
    """Raised by a model's cross-field check: ``(sub.path, message)`` pairs the error translator appends to the loc."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


_SECTION_KINDS = {("receivers",): "receiver", ("processors",): "processor", ("exporters",): "exporter"}
_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
}
_SECRETS = {"bearer_token", "password", "api_key", "token"}  # never echoed back, not even in an error
_BOUND_WORDS = {"greater_than_equal": "at least", "less_than_equal": "at most", "greater_than": "above"}


def key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key; the key itself is already in loc
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts, for 'did you mean' hints."""
    cls: Any = root
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        types = (field.annotation, *get_args(field.annotation))  # GrpcProtocol | None → GrpcProtocol
        cls = next((t for t in types if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if cls is None:
            return []
    return list(cls.model_fields)


def _unknown_key(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    known, kind = _fields_at(root, loc[:-1]), _SECTION_KINDS.get(tuple(loc[:-1]), "key")
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"unknown {kind}, did you mean {show(close[0])}?"
    return f"unknown {kind}, expected one of {', '.join(known)}" if known else f"unknown {kind}"


def error_lines(exc: ValidationError, data: Any, root: type[BaseModel]) -> list[str]:
    """pydantic's errors → our one-line, lower-case, key-naming form."""
    lines = []
    for err in exc.errors(include_url=False):
        loc, kind, ctx = tuple(err["loc"]), err["type"], err.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, FieldErrors):
            lines += [f"{key_path(loc + tuple(sub.split('.')))}: {msg}" for sub, msg in cause.problems]
            continue
        if kind == "extra_forbidden":
            msg = _unknown_key(root, loc)
        elif kind in _TYPE_WORDS:
            got = "a value that is not shown" if loc[-1] in _SECRETS else show(_lookup(data, loc))
            msg = f"expected {_TYPE_WORDS[kind]}, got {got}"
        elif kind == "value_error":
            msg = str(cause)
        elif kind == "too_short":
            msg = "must list at least one name"
        elif kind in _BOUND_WORDS:
            msg = f"must be {_BOUND_WORDS[kind]} {next(iter(ctx.values()))}, got {show(_lookup(data, loc))}"
        else:
            msg = err["msg"][:1].lower() + err["msg"][1:]
        lines.append(f"{key_path(loc)}: {msg}")
    return lines


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    """The raw value at ``loc`` (error messages quote what the user wrote, not a coerced form)."""
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_REFERENCE = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.S)


def expand_env(data: Any, environ: dict[str, str], errors: list[str], loc: tuple[Any, ...] = ()) -> Any:
    """A copy of ``data`` with ``${env:VAR}`` / ``${env:VAR:-default}`` expanded in string values, ``$$`` → ``$``.

    As in the collector, the default applies only when the variable is unset, and an unset variable without a
    default expands to the empty string. Keys are never expanded.
    """
    if isinstance(data, dict):
        return {k: expand_env(v, environ, errors, loc + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, environ, errors, loc + (i,)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        ref = _ENV_REFERENCE.fullmatch(m.group(1))
        if ref is None and m.group(1).startswith("env:"):
            name = m.group(1)[4:].partition(":-")[0]
            errors.append(f"{key_path(loc)}: invalid environment variable name {show(name)} in {show(m.group(0))}")
            return m.group(0)
        if ref is None:
            expected = '"${env:VAR}" or "${env:VAR:-default}"'
            errors.append(f"{key_path(loc)}: unsupported reference {show(m.group(0))}, expected {expected}")
            return m.group(0)
        name, default = ref.groups()
        return environ[name] if name in environ else (default or "")  # a set-but-empty variable stays empty

    return _REFERENCE.sub(one, data)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML would otherwise keep the last one silently."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {show(key)}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
