"""Settings mechanics: a stage's settings dataclass becomes its command-line flags.

Each stage declares its settings as a dataclass at the top of its entry point (nanochat/scripts/),
one field per line with a trailing comment. This leaf module turns such a class into argparse flags
and back, and reads the one-line comments; nanochat.configuration generates the workflow's schema,
commented config and reference page from the same classes.
"""

import argparse
import dataclasses
import inspect
import io
import tokenize
import typing
from pathlib import Path
from typing import Any, Literal

JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field line in the class body: the setting's one-line help."""
    comments, name = {}, None
    for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline):
        if tok.type == tokenize.NAME and name is None:
            name = tok.string
        elif tok.type == tokenize.COMMENT and name is not None:
            comments[name] = tok.string.lstrip("# ").strip()
        elif tok.type in (tokenize.NEWLINE, tokenize.NL):
            name = None
    fields = [f.name for f in dataclasses.fields(cls)]
    missing = [f for f in fields if not comments.get(f)]
    if missing:
        raise ValueError(f"{cls.__name__}: fields without a one-line comment: {missing}")
    return {f: comments[f] for f in fields}


def json_type(annotation: Any) -> dict[str, Any]:
    """The JSON-schema type of a setting's annotation (a Literal becomes an enum)."""
    if typing.get_origin(annotation) is Literal:
        return {"type": "string", "enum": list(typing.get_args(annotation))}
    if annotation not in JSON_TYPES:
        raise TypeError(f"unsupported setting type {annotation!r}")
    return {"type": JSON_TYPES[annotation]}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--name=value` flag per setting, with the dataclass default and comment as help."""
    hints = typing.get_type_hints(cls)
    for f, comment in zip(dataclasses.fields(cls), field_comments(cls).values()):
        kind = hints[f.name]
        if typing.get_origin(kind) is Literal:
            parser.add_argument(f"--{f.name}", choices=typing.get_args(kind), default=f.default, help=comment)
        elif kind is bool:
            parser.add_argument(f"--{f.name}", type=_parse_bool, default=f.default, help=f"{comment} (true/false)")
        else:
            parser.add_argument(f"--{f.name}", type=kind, default=f.default, help=f"{comment} (default: {f.default})")


def add_path_arguments(parser: argparse.ArgumentParser, **helps: str) -> None:
    """Required path flags of an entry point: add_path_arguments(parser, out="JSON record to write")."""
    for name, help_text in helps.items():
        parser.add_argument(f"--{name}", type=Path, required=True, help=help_text)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The settings instance from parsed flags, with the same bounds the schema enforces."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if "minimum" in f.metadata and values[f.name] < f.metadata["minimum"]:
            raise SystemExit(f"error: --{f.name}={values[f.name]} is below the minimum {f.metadata['minimum']}")
    return cls(**values)


def coerce_cli_strings(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Snakemake's `--config key={nested: 8192}` delivers nested values as strings: restore numbers
    and booleans where the schema asks for one. Anything else is left for the schema to reject."""
    casts = {"integer": int, "number": float, "boolean": _parse_bool}
    for key, value in config.items():
        prop = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and prop.get("type") == "object":
            coerce_cli_strings(value, prop)
        elif isinstance(value, str) and prop.get("type") in casts:
            try:
                config[key] = casts[prop["type"]](value)
            except (ValueError, argparse.ArgumentTypeError):
                pass


def stage_parser(doc: str, *classes: type, device: bool = False, **paths: str) -> argparse.ArgumentParser:
    """An entry point's parser: its docstring as help, a flag per setting of `classes`, the required path
    flags `paths` (name="help"), and with `device` the --device flag of the evaluation stages."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for cls in classes:
        add_arguments(parser, cls)
    add_path_arguments(parser, **paths)
    if device:
        parser.add_argument("--device", default="", help="cuda, cpu or mps (default: the best available)")
    return parser
