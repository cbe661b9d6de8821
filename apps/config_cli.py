"""Command-line options generated from the configuration dataclasses: one default, one help text.

A verb names the fields of its config it exposes; each becomes an option whose default is the
field's default and whose help is the field's docstring (the string literal written under the field
in the dataclass, read from the source without importing it). ``bool`` fields become a switch (``--name`` when the default is off,
``--no-name`` when it is on). :func:`config_from_args` builds the config back from the parsed
arguments, so the CLI, the library and ``config.json`` cannot disagree on a default.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One field of a configuration dataclass, read from its source."""

    name: str
    kind: type
    """Scalar type of the annotation (``float | None`` is ``float``)."""
    default: Any
    doc: str
    """The field's docstring on one line, reST markup removed."""


_SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


def _source_class(target: str) -> tuple[ast.ClassDef, dict[str, Any]]:
    """The class ``module:Class`` parsed from its module's source, without importing the module, and
    the module's constants ({NAME: literal value} of its top-level ``NAME = literal`` lines)."""
    module, name = target.split(":")
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, constants
    raise LookupError(f"{target}: no such class")


def _literal_default(value: ast.expr | None, constants: dict[str, Any]) -> Any:
    """A field's default when it is a literal or a module constant holding one, else MISSING."""
    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
        value = next((k.value for k in value.keywords if k.arg == "default"), None)
    if value is None:
        return dataclasses.MISSING
    if isinstance(value, ast.Name):
        return constants.get(value.id, dataclasses.MISSING)
    try:
        return ast.literal_eval(value)
    except ValueError:
        return dataclasses.MISSING


@lru_cache(maxsize=None)
def config_fields(target: str) -> dict[str, FieldSpec]:
    """The scalar fields with literal defaults of the dataclass ``module:Class``: {name: spec}.

    Read from the source so that ``omnimocap --help`` does not import the library (torch)."""
    cls, constants = _source_class(target)
    body = cls.body
    out = {}
    for node, after in zip(body, body[1:] + [None]):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        kinds = [_SCALARS.get(part.strip()) for part in ast.unparse(node.annotation).split("|")]
        kinds = [k for k in kinds if k is not None]
        default = _literal_default(node.value, constants)
        if not kinds or default is dataclasses.MISSING:
            continue
        doc = ""
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            doc = " ".join(after.value.value.split()).replace("``", "").replace("%", "%%")
        out[node.target.id] = FieldSpec(node.target.id, kinds[0], default, doc)
    return out


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_options(parser: argparse.ArgumentParser, target: str, names: Sequence[str], *,
                       choices: dict[str, Sequence[Any]] | None = None,
                       metavars: dict[str, str] | None = None, flags: dict[str, str] | None = None) -> None:
    """Add one option per field ``names`` of the dataclass ``target`` (``module:Class``; see the module
    docstring); ``choices`` restricts a field's values; ``flags`` names an option other than the
    field (an option name users already know); the option's ``dest`` is the field's name."""
    fields = config_fields(target)
    for name in names:
        f = fields[name]
        if f.kind is bool:
            flag = option_name(("no_" if f.default else "") + name)
            parser.add_argument(flag, dest=name, action="store_false" if f.default else "store_true",
                                default=f.default, help=("turn off: " if f.default else "") + f.doc)
            continue
        shown = "" if f.default is None else f" (default: {f.default})"
        parser.add_argument((flags or {}).get(name, option_name(name)), dest=name, type=f.kind, default=f.default,
                            choices=(choices or {}).get(name), metavar=(metavars or {}).get(name),
                            help=f.doc + shown)


def config_class(target: str) -> type:
    """Import the dataclass ``module:Class``."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def config_from_args(target: str, args: argparse.Namespace, names: Sequence[str], **overrides: Any):
    """An instance of the dataclass ``target`` with the fields ``names`` taken from ``args`` and
    ``overrides`` set; every other field keeps its default."""
    values = {name: getattr(args, name) for name in names}
    values.update(overrides)
    return config_class(target)(**values)
