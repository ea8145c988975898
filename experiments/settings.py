"""One configuration system for every experiment: frozen dataclasses, ``--set``, ``--config``.

A configuration is a (nested) frozen dataclass whose fields are settings; each setting carries a
one-line description in its field metadata (``setting(default, "what it is")``), so adding the
description changes neither ``to_dict`` nor any fingerprint of the configuration. Command lines
get the same four options from ``add_config_arguments``:

    --preset NAME      start from a named preset (when the experiment has presets)
    --config FILE      start from a saved config.json (unknown keys and wrong types are errors)
    --set KEY=VALUE    change one setting, typed by its field (repeatable)
    --show-config      print every setting with its value and description and exit

``config_from_args`` turns the parsed arguments into a validated configuration. Values given to
``--set`` are parsed by the field's type: ``vi.kl_weights=1,10``, ``adammcmc.enabled=false``,
``vi.num_epochs=2_000``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A bad setting, override or configuration file (the message names it)."""


def setting(default=dataclasses.MISSING, doc: str = "", *, default_factory=dataclasses.MISSING,
            fixed: bool = False):
    """A dataclass field with a one-line description; ``fixed``: not changeable with ``--set``."""
    meta = {"doc": doc, "fixed": fixed}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- (de)serialisation


def to_dict(cfg) -> dict:
    """JSON-ready nested dict of a configuration (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: Mapping, cls, where: str = "config"):
    """Instance of dataclass ``cls`` from a nested dict, checking every key and type.

    Missing keys keep their defaults; an unknown key or a value of the wrong type is a
    ``ConfigError`` naming it (``where`` prefixes the name, e.g. the file).
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown} (known: {sorted(fields)})")
    required = sorted(n for n, f in fields.items() if n not in d
                      and f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING)
    if required:
        raise ConfigError(f"{where}: missing setting(s) {required}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}" if where != "config" else name)
              for name, value in d.items()}
    return cls(**kwargs)


def _coerce(tp, value, name):
    if dataclasses.is_dataclass(tp):
        return from_dict(value, tp, name)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        (elem, *_) = typing.get_args(tp)
        return tuple(_coerce(elem, v, f"{name}[{i}]") for i, v in enumerate(value))
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[tp]
    if not ok(value):
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def load_file(path: str | Path, cls):
    """Configuration saved as JSON at ``path`` (e.g. a study's config.json), checked by type."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} is not readable JSON ({e})") from None
    return from_dict(d, cls, where=str(path))


# ----------------------------------------------------------------------------- overrides


def apply_override(cfg, assignment: str):
    """Return ``cfg`` with one ``"dotted.name=value"`` assignment applied (value typed by field)."""
    if "=" not in assignment:
        raise ConfigError(f"override must look like section.field=value, got {assignment!r}")
    name, raw = assignment.split("=", 1)
    path = name.strip().split(".")
    return _replace_path(cfg, path, raw.strip(), name.strip())


def _replace_path(obj, path, raw, full_name):
    fields = {f.name: f for f in dataclasses.fields(obj)}
    head = path[0]
    if head not in fields:
        raise ConfigError(f"unknown setting {full_name!r}: {type(obj).__name__} has no field "
                          f"{head!r} (fields: {sorted(fields)})")
    if fields[head].metadata.get("fixed"):
        raise ConfigError(f"setting {full_name!r} cannot be changed with --set "
                          f"({fields[head].metadata.get('doc', '')})")
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown setting {full_name!r}: {head!r} is not a section")
        return dataclasses.replace(obj, **{head: _replace_path(current, path[1:], raw, full_name)})
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"setting {full_name!r} is a section; set one of its fields instead")
    return dataclasses.replace(obj, **{head: _parse(hints[head], raw, full_name)})


def _parse(tp, raw: str, name: str):
    try:
        if tp is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typing.get_origin(tp) is tuple:
            (elem, *_) = typing.get_args(tp)
            text = raw.strip("()[] ")
            items = [s.strip() for s in text.split(",") if s.strip()]
            return tuple(_parse(elem, s, name) for s in items)
        if tp is int:
            value = ast.literal_eval(raw.replace("_", ""))
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError
            return value
        if tp is float:
            return float(raw)
        if tp is str:
            return raw
    except (ValueError, SyntaxError):
        pass
    raise ConfigError(f"cannot parse {raw!r} as {_type_name(tp)} for setting {name!r}")


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "true/false", int: "int", float: "float", str: "str"}.get(
        tp, getattr(tp, "__name__", str(tp)))


# ----------------------------------------------------------------------------- description


def describe(cfg) -> list[tuple[str, object, str]]:
    """(dotted name, value, description) of every setting of ``cfg``, in field order."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += [(f"{f.name}.{n}", v, d) for n, v, d in describe(value)]
        else:
            out.append((f.name, value, f.metadata.get("doc", "")))
    return out


def show(cfg) -> str:
    """Every setting as ``name = value  # description`` (values as ``--set`` accepts them)."""
    rows = [(n, _format_value(v), d) for n, v, d in describe(cfg)]
    width = max(len(f"{n} = {v}") for n, v, _ in rows)
    return "\n".join(f"{f'{n} = {v}':<{width}}  # {d}" if d else f"{n} = {v}"
                     for n, v, d in rows)


def _format_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, tuple):
        return ",".join(_format_value(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- command line


def add_config_arguments(parser: argparse.ArgumentParser, presets: Mapping | None = None,
                         default_preset: str | None = None,
                         preset_option: str = "--preset") -> argparse.ArgumentParser:
    """Add ``--preset`` (if ``presets``; named ``preset_option``), ``--config``, ``--set`` and
    ``--show-config``; ``config_from_args`` reads them back."""
    if presets:
        parser.add_argument(preset_option, dest="preset", default=None, choices=sorted(presets),
                            help=f"start from this size preset (default: {default_preset}, or "
                                 "the preset saved in the output folder)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="start from a saved config.json instead of a preset "
                             "(--set still applies on top)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="change one setting, e.g. --set seed=1 (repeatable; "
                             "--show-config lists every key with its description)")
    parser.add_argument("--show-config", nargs="?", const="text", default=None,
                        choices=("text", "json"),
                        help="print the resolved configuration and exit: one line per setting "
                             "with its description (text, default) or as JSON (loadable "
                             "with --config)")
    return parser


def config_from_args(args: argparse.Namespace, cls, presets: Mapping[str, Callable] | None = None,
                     default_preset: str | None = None, saved_preset: str | None = None):
    """Validated configuration from ``add_config_arguments``' options.

    Base: ``--config FILE``, else ``--preset``, else ``saved_preset`` (the preset of an earlier
    run in the output folder), else ``default_preset``, else ``cls()``; then every ``--set``.
    """
    preset = getattr(args, "preset", None)
    if args.config is not None:
        if preset is not None:
            raise ConfigError("give a preset or --config, not both")
        cfg = load_file(args.config, cls)
    elif presets:
        name = preset or saved_preset or default_preset
        if name not in presets:
            raise ConfigError(f"preset {name!r} is unknown (presets: {sorted(presets)})")
        cfg = presets[name]()
    else:
        cfg = cls()
    for assignment in args.overrides:
        cfg = apply_override(cfg, assignment)
    return validate(cfg)


def validate(cfg):
    """``cfg.validate()`` if the configuration defines it; ValueErrors become ConfigErrors."""
    check = getattr(cfg, "validate", None)
    if check is None:
        return cfg
    try:
        out = check()
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    return cfg if out is None else out


def print_config(cfg, fmt: str = "text") -> None:
    print(json.dumps(to_dict(cfg), indent=2) if fmt == "json" else show(cfg))
