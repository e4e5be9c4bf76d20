"""Reference pages generated from the code, so that they cannot drift from it.

    python -m gateway.ops.docgen            write the pages below (``./dev docs``)
    python -m gateway.ops.docgen --check    write nothing; exit 1 naming every page that differs

- ``docs/reference/config.md``: every key of the config file, from the pydantic models in
  :mod:`gateway.config` (and the options of each format and of the Modbus register maps, which
  are dataclasses in ``devices/``): its path, type and limits, default, environment variable
  and description;
- ``docs/man/garden-gateway.yaml.5``: the same keys as a man page of the config file;
- ``docs/man/garden-gateway.1``: every subcommand and option of ``garden-gateway``, from
  :func:`gateway.ops.cli.build_parser`.

A key without a description is refused (:class:`UndocumentedKey`, naming the key), so a new key
cannot land undocumented. Model fields carry their description in ``Field(description=...)``;
dataclass fields in ``devices/`` (which imports nothing of the gateway) in
``field(metadata={"description": ...})`` or, until they do, in :data:`DATACLASS_DESCRIPTIONS`
below. The output depends only on the code: no dates, no terminal width, no absolute paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, SecretStr

from devices import serial_lines
from devices.formats import FORMATS
from gateway.config import ENV_PREFIX, Config, SerialSourceConfig, SubscriptionConfig

__all__ = [
    "CONFIG_MD",
    "MAN_CLI",
    "MAN_CONFIG",
    "Key",
    "Table",
    "UndocumentedKey",
    "config_tables",
    "generate",
    "main",
]

ROOT = Path(__file__).resolve().parents[2]
CONFIG_MD = "docs/reference/config.md"
MAN_CLI = "docs/man/garden-gateway.1"
MAN_CONFIG = "docs/man/garden-gateway.yaml.5"
SUMMARY_MD = "docs/reference/park-summary.md"

# Descriptions of the fields of the dataclasses in devices/ that the config file reaches (the
# Modbus register map, each format's options). Keyed "module.Class.field"; a field's own
# metadata["description"] wins. The generator refuses a field found in neither.
_TIME = "Which device timestamps are believed (earliest_ns, max_future_ns)"
_RENAME = "Field renames: name as decoded → name stored (give fields their units)"
_INTEGERS = ("float: whole numbers are stored as floats (a field never changes type in "
             "InfluxDB); int: kept as integers, for counters from firmware that always prints "
             "integers")
_MEASUREMENT = "Measurement of the readings of devices without a kind in the device list"
DATACLASS_DESCRIPTIONS: dict[str, str] = {
    "devices.modbus.Block.function": "What is read: holding or input registers, coils or "
    "discrete inputs",
    "devices.modbus.Block.address": "First address read, decimal (the datasheet's 40001 is "
    "holding address 0)",
    "devices.modbus.Block.count": "How many registers (at most 125) or bits (at most 2000)",
    "devices.modbus.Block.registers": "The fields found in this block",
    "devices.modbus.Block.measurement": "The block's own measurement; empty: the slave's",
    "devices.modbus.Register.field": "Field name in InfluxDB, with its unit (level_mm)",
    "devices.modbus.Register.address": "Its address, decimal (not relative to the block); it "
    "must lie inside the block",
    "devices.modbus.Register.type": "int16, uint16, int32, uint32, float32 (two registers for "
    "32 bits), or bool in coils and discrete inputs",
    "devices.modbus.Register.word_order": "32-bit types: big when the first register holds the "
    "high word (ABCD), little when it holds the low word (CDAB)",
    "devices.modbus.Register.byte_order": "little swaps the two bytes of every register (BADC, "
    "or DCBA with word_order little)",
    "devices.modbus.Register.scale": "value = raw * scale + offset; not 0",
    "devices.modbus.Register.offset": "Added after scaling",
    "devices.modbus.Register.unit": "For people reading the config only; the field name "
    "carries the unit",
    "devices.timeparse.TimePolicy.earliest_ns": "A device time before this (ns since the "
    "epoch) is not believed: the receive time is used",
    "devices.timeparse.TimePolicy.max_future_ns": "A device time more than this (ns) after "
    "the receive time is not believed: the receive time is used",
    "devices.native.Options.measurement": _MEASUREMENT,
    "devices.native.Options.topic_prefix": "First topic level: <prefix>/<site>/<device>/"
    "telemetry",
    "devices.native.Options.default_utc_offset_minutes": "Zone of an ISO 8601 ts without one, "
    "in minutes east of UTC",
    "devices.native.Options.time": _TIME,
    "devices.native.Options.rename": _RENAME,
    "devices.native.Options.integers": _INTEGERS,
    "devices.collectd.Options.measurement": _MEASUREMENT,
    "devices.collectd.Options.topic_prefix": "First topic level: <prefix>/<host>/<plugin>/"
    "<type>",
    "devices.collectd.Options.store_rates": "collectd's StoreRates: true (collectd's default) "
    "when counters arrive as rates per second, false when they arrive as counters",
    "devices.collectd.Options.time": _TIME,
    "devices.collectd.Options.rename": _RENAME,
    "devices.tasmota.Options.measurement": _MEASUREMENT,
    "devices.tasmota.Options.topic_prefix": "First topic level: <prefix>/<topic>/SENSOR",
    "devices.tasmota.Options.utc_offset_minutes": "Tasmota's Time is local time without a "
    "zone: its offset east of UTC in minutes (480: WITA)",
    "devices.tasmota.Options.time": _TIME,
    "devices.tasmota.Options.rename": _RENAME,
    "devices.esphome.Options.measurement": _MEASUREMENT,
    "devices.esphome.Options.time": "Present so every format's options look alike: ESPHome "
    "sends no time",
    "devices.esphome.Options.rename": "Object id → field name (give fields their units)",
    "devices.influx.Options.measurement": "Unused: every line names its measurement",
    "devices.influx.Options.precision": "Unit of the lines' timestamps: ns, us, ms or s",
    "devices.influx.Options.device_tag": "The tag that names the device (Telegraf's host), "
    "stored as device unless the line has a device tag",
    "devices.influx.Options.time": _TIME,
    "devices.influx.Options.rename": _RENAME,
    "devices.jsonmap.Options.measurement": _MEASUREMENT,
    "devices.jsonmap.Options.fields": "Dotted path in the payload (env.t) → field name "
    "(temperature_c)",
    "devices.jsonmap.Options.device": "Fixed device id, when neither device_key nor "
    "device_topic_level gives one",
    "devices.jsonmap.Options.device_key": "Dotted path of the device id in the payload",
    "devices.jsonmap.Options.device_topic_level": "Topic level holding the device id (0 the "
    "first, -1 the last)",
    "devices.jsonmap.Options.time_key": "Dotted path of the device's time (epoch s, ms, us, "
    "ns, or ISO 8601); none: the receive time",
    "devices.jsonmap.Options.default_utc_offset_minutes": "Zone of an ISO 8601 time without "
    "one, in minutes east of UTC",
    "devices.jsonmap.Options.time": _TIME,
    "devices.jsonmap.Options.rename": _RENAME,
    "devices.jsonmap.Options.integers": _INTEGERS,
    "devices.serial_lines.Options.format": "json: a JSON object a line; kv: key=value pairs; "
    "csv: values in the order of columns",
    "devices.serial_lines.Options.device": "Fixed device id, when the line does not name one "
    "at device_key",
    "devices.serial_lines.Options.device_key": "Key (json, kv) or column (csv) holding the "
    "device id",
    "devices.serial_lines.Options.measurement": _MEASUREMENT,
    "devices.serial_lines.Options.columns": "csv: the name of each column; empty or - skips a "
    "column",
    "devices.serial_lines.Options.separator": "csv: the separator between values",
    "devices.serial_lines.Options.time_key": "Key or column holding the device's time (epoch "
    "s, ms, us, ns, or ISO 8601); none: the time the line arrived",
    "devices.serial_lines.Options.default_utc_offset_minutes": "Zone of an ISO 8601 time "
    "without one, in minutes east of UTC",
    "devices.serial_lines.Options.checksum": "nmea: every line ends in *hh, the XOR of the "
    "bytes between an optional $ and the * (bad lines are dead-lettered as checksum)",
    "devices.serial_lines.Options.time": _TIME,
    "devices.serial_lines.Options.rename": _RENAME,
    "devices.serial_lines.Options.integers": _INTEGERS,
}

# Free-form "options" mappings whose shape depends on another key: (model, field) → the
# dataclasses it is validated into, with the title and description of each.
_OPTIONS: dict[tuple[type, str], list[tuple[str, str, type]]] = {
    (SubscriptionConfig, "options"): [
        (f"format: {name}", f"The options of a subscription with format: {name}.", fmt.options)
        for name, fmt in FORMATS.items()],
    (SerialSourceConfig, "options"): [
        ("", "The options of a serial source: how its lines are read.", serial_lines.Options)],
}

_INDEXES = "ijklmn"


class UndocumentedKey(ValueError):
    """A config key without a description: every key must say what it does."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: the config key has no description; add "
                         "Field(description=...) (or, for a dataclass in devices/, "
                         "field(metadata={'description': ...}))")
        self.path = path


@dataclass(frozen=True, slots=True)
class Key:
    """One key of the config file, as the reference shows it."""

    path: str
    type: str
    # (kind, value): kind one of ge, gt, le, lt, min_length, max_length, pattern.
    limits: tuple[tuple[str, str], ...]
    default: str
    required: bool
    env: str
    secret: bool
    description: str


@dataclass(frozen=True, slots=True)
class Table:
    """The keys of one mapping in the config file (a section, a list item, a format's options)."""

    path: str
    title: str
    description: str
    keys: tuple[Key, ...]


# -- walking the models ----------------------------------------------------------------------


def _structured(kind: Any) -> bool:
    return isinstance(kind, type) and (
        issubclass(kind, BaseModel) or dataclasses.is_dataclass(kind))


def _strip(ann: Any) -> Any:
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _union_args(ann: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(ann)
    return None


def _inner(ann: Any) -> tuple[bool, list[type]]:
    """Whether ``ann`` is a list, and the models/dataclasses its values are."""
    ann = _strip(ann)
    args = _union_args(ann)
    if args is not None:
        found = [c for a in args for c in _inner(a)[1]]
        return any(_inner(a)[0] for a in args), found
    origin = typing.get_origin(ann)
    if origin in (tuple, list, Sequence):
        items = [a for a in typing.get_args(ann) if a is not Ellipsis]
        return True, [c for a in items for c in _inner(a)[1]]
    if _structured(ann):
        return False, [ann]
    return False, []


def _type_text(ann: Any) -> str:
    ann = _strip(ann)
    args = _union_args(ann)
    if args is not None:
        parts = [_type_text(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(dict.fromkeys(parts))
    origin = typing.get_origin(ann)
    if origin is Literal:
        return "one of: " + ", ".join(_yaml(v) for v in typing.get_args(ann))
    if origin in (tuple, list, Sequence):
        items = [a for a in typing.get_args(ann) if a is not Ellipsis]
        item = _type_text(items[0]) if len(items) == 1 else "value"
        return "list of " + _PLURAL.get(item, item)
    if origin in (dict, Mapping) or ann in (dict, Mapping):
        key_value = typing.get_args(ann)
        if key_value and all(a is str for a in key_value):
            return "mapping of text to text"
        return "mapping"
    if _structured(ann):
        return "section"
    names: dict[Any, str] = {str: "text", int: "integer", float: "number", bool: "boolean",
                             Path: "path", SecretStr: "text", datetime: "date or date-time"}
    return names.get(ann, getattr(ann, "__name__", str(ann)))


_PLURAL = {"section": "sections", "integer": "integers", "number": "numbers", "path": "paths",
           "value": "values"}


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


_LIMITS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")
_LIMIT_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=",
                "max_length": "length <=", "pattern": "matches"}
_LIMIT_SIGNS = {"ge": "≥", "le": "≤", "min_length": "length ≥", "max_length": "length ≤"}


def _limits(metadata: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for item in metadata:
        for attr in _LIMITS:
            value = getattr(item, attr, None)
            if value is not None:
                found.append((attr, value if attr == "pattern" else _number(value)))
    return tuple(found)


def _limits_text(limits: Sequence[tuple[str, str]], *, markdown: bool) -> str:
    parts: list[str] = []
    for kind, value in limits:
        word = (_LIMIT_SIGNS.get(kind) if markdown else None) or _LIMIT_WORDS[kind]
        shown = _code(value) if markdown and kind == "pattern" else value
        parts.append(f"{word} {shown}")
    return ", ".join(parts)


def _plain(text: str) -> bool:
    """Whether YAML reads ``text`` unquoted as this very string."""
    try:
        return bool(text) and text.strip() == text and yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def _yaml(value: object) -> str:
    """A default as it would be written in the YAML file (flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # Quoted where YAML would read something else ("5" is a number, "" nothing, yes true).
        return value if _plain(value) else '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, BaseModel):
        return _yaml(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _yaml({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


_SIZES = ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB"))
_SPANS = ((86400, "d"), (3600, "h"), (60, "min"))


def _default_text(name: str, value: object) -> str:
    text = _yaml(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return text
    if name.endswith("_ns"):
        if value >= 10**17:
            return f"{text} ({_yaml(datetime.fromtimestamp(value / 10**9, UTC))})"
        return f"{text} ({_number(value / 10**9)} s)"
    units = _SIZES if name.endswith("bytes") else _SPANS if name.endswith("_s") else ()
    for size, unit in units:
        if value >= size and value % size == 0:
            return f"{text} ({_number(value / size)} {unit})"
    return text


def _env(path: str) -> str:
    parts: list[str] = []
    depth = 0
    for part in path.split("."):
        if part.endswith("[]"):
            parts.append(part[:-2].upper())
            parts.append(f"<{_INDEXES[depth]}>")
            depth += 1
        else:
            parts.append(part.upper())
    return ENV_PREFIX + "__".join(parts)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    annotation: Any
    description: str | None
    metadata: tuple[Any, ...]
    required: bool
    default: object


def _fields(kind: type) -> list[_Field]:
    if issubclass(kind, BaseModel):
        return [
            _Field(name, info.annotation, info.description, tuple(info.metadata),
                   info.is_required(),
                   None if info.is_required() else info.get_default(call_default_factory=True))
            for name, info in kind.model_fields.items()
        ]
    if not dataclasses.is_dataclass(kind):
        raise TypeError(f"{kind!r} is neither a pydantic model nor a dataclass")
    hints = typing.get_type_hints(kind)
    out: list[_Field] = []
    for f in dataclasses.fields(kind):
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        default: object = None
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        description = f.metadata.get("description") or DATACLASS_DESCRIPTIONS.get(
            f"{kind.__module__}.{kind.__qualname__}.{f.name}")
        out.append(_Field(f.name, hints[f.name], description, (), required, default))
    return out


def _kind_tag(kind: type) -> str:
    """The literal ``kind`` of one alternative of a tagged union (alert targets)."""
    for f in _fields(kind):
        if f.name == "kind":
            args = typing.get_args(_strip(f.annotation))
            if args:
                return f"kind: {args[0]}"
    return kind.__name__


def _walk(kind: type, path: str, title: str, description: str,
          seen: set[tuple[str, type]]) -> Iterator[Table]:
    if (path, kind) in seen:
        return
    seen.add((path, kind))
    keys: list[Key] = []
    children: list[tuple[type, str, str, str]] = []
    for f in _fields(kind):
        key = f"{path}.{f.name}" if path else f.name
        if not f.description:
            raise UndocumentedKey(key)
        is_list, inner = _inner(f.annotation)
        type_text = _type_text(f.annotation)
        secret = SecretStr in (typing.get_args(_strip(f.annotation)) or (f.annotation,))
        if secret:
            type_text += ", secret"
        structured = bool(inner)
        keys.append(Key(
            path=key, type=type_text, limits=_limits(f.metadata),
            default="" if f.required or isinstance(f.default, BaseModel)
            else _default_text(f.name, f.default),
            required=f.required, env="" if structured else _env(key), secret=secret,
            description=f.description))
        child_path = key + ("[]" if is_list else "")
        for child in inner:
            label = _kind_tag(child) if len(inner) > 1 else ""
            children.append((child, child_path, label, f.description))
        for label, about, options in _OPTIONS.get((kind, f.name), []):
            children.append((options, key, label, about))
    yield Table(path, title, description, tuple(keys))
    for child, child_path, label, child_description in children:
        yield from _walk(child, child_path, label, child_description, seen)


def config_tables(model: type[BaseModel] = Config) -> list[Table]:
    """Every mapping of the config file and its keys, in the order of the models.

    Raises :class:`UndocumentedKey` for a key without a description.
    """
    return list(_walk(model, "", "", "Keys at the top of the file.", set()))


# -- docs/reference/config.md ------------------------------------------------------------------


def _md(text: str) -> str:
    # "<site>" would be read as an HTML tag and vanish.
    return text.replace("|", "\\|").replace("<", "\\<")


def _code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|") if text else ""


def _anchor(table: Table) -> str:
    words = (table.path or "top level") + (f" {table.title}" if table.title else "")
    return "".join(c for c in words.replace(" ", "-").replace(".", "")
                   if c.isalnum() or c in "-_").lower()


def config_markdown(tables: Sequence[Table]) -> str:
    out = [
        "# Configuration reference",
        "",
        "<!-- GENERATED by `python -m gateway.ops.docgen` (`./dev docs`) from the models in",
        "     gateway/config/. Do not edit: change the Field(description=...) and regenerate.",
        "     tests/test_docs.py fails when this page and the code disagree. -->",
        "",
        "One YAML file, usually `/etc/garden-gateway/config.yaml`; `config/example.yaml` is a",
        "complete working example. `garden-gateway check-config --config FILE` validates it and",
        "names every wrong key (exit 2). Also as a man page: `man docs/man/garden-gateway.yaml.5`.",
        "",
        "- **Environment**: every key can be overridden by a variable: prefix",
        f"  `{ENV_PREFIX}`, the key path in capitals, `__` between levels; values are read as",
        "  YAML scalars (`1884` is a number, `true` a boolean). In a list, `<i>` is the item's",
        "  index from 0, and the item must exist in the file: "
        "`GARDEN_GATEWAY_SUBSCRIPTIONS__0__TOPIC='garden/#'`.",
        "- **Secrets** (type *secret*) never belong in the YAML (`check-config` warns): give",
        "  them in the environment (the service's `/etc/garden-gateway/secrets.env`) or in the",
        "  file named by the key's `_file` twin (`mqtt.password_file`, `influx.password_file`,",
        "  `influx.token_file`, `api.operator_token_file`, `alerts.targets[].bot_token_file`).",
        "- **Lists** are written `key[]`: `modbus[].slaves[].unit` is the `unit` of each slave",
        "  of each bus. A *section* is a mapping whose keys follow in their own table.",
        "",
        "## Contents",
        "",
    ]
    for table in tables:
        name = table.path or "top level"
        label = f" ({table.title})" if table.title else ""
        out.append(f"- [`{name}`{label}](#{_anchor(table)})")
    for table in tables:
        name = table.path or "Top level"
        label = f" ({table.title})" if table.title else ""
        out += ["", f'<a id="{_anchor(table)}"></a>', "",
                f"## `{name}`{label}" if table.path else f"## {name}", "",
                _md(table.description), "",
                "| key | type | default | environment | description |",
                "| --- | --- | --- | --- | --- |"]
        for key in table.keys:
            limits = _limits_text(key.limits, markdown=True)
            kind = _md(key.type) + (f"; {limits}" if limits else "")
            default = "*required*" if key.required else _code(key.default)
            out.append(f"| `{key.path}` | {kind} | {default} | {_code(key.env)} | "
                       f"{_md(key.description)} |")
    return "\n".join(out) + "\n"


# -- man pages ---------------------------------------------------------------------------------


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def _version(root: Path) -> str:
    pyproject = root / "pyproject.toml"
    with pyproject.open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _th(name: str, section: int, version: str, manual: str) -> str:
    return f'.TH {name} {section} "" "garden-gateway {version}" "{manual}"'


def config_man(tables: Sequence[Table], version: str) -> str:
    out = [
        '.\\" GENERATED by python -m gateway.ops.docgen (./dev docs) from gateway/config/.',
        '.\\" Do not edit: tests/test_docs.py fails when this page and the code disagree.',
        _th("GARDEN-GATEWAY.YAML", 5, version, "File Formats"),
        ".SH NAME",
        "garden-gateway.yaml \\- the configuration file of garden-gateway",
        ".SH SYNOPSIS",
        _roff("/etc/garden-gateway/config.yaml"),
        ".SH DESCRIPTION",
        _roff("One YAML file, validated when the gateway starts; every problem is reported at "
              "once, naming the key. garden-gateway check-config --config FILE validates a "
              "file (exit 2 when it is not valid). config/example.yaml is a complete "
              "working example."),
        ".PP",
        _roff("Keys are written as paths: mqtt.port is the key port in the section mqtt; "
              "a list is written key[], so modbus[].slaves[].unit is the unit of each "
              "slave of each bus."),
        ".SH ENVIRONMENT",
        _roff(f"Every key can be overridden by an environment variable: the prefix "
              f"{ENV_PREFIX}, the key path in capitals, __ between levels, for example "
              f"{ENV_PREFIX}MQTT__PORT=1884. Values are read as YAML scalars. In a list, "
              "<i> is the item's index from 0, and the item must exist in the file."),
        ".PP",
        _roff("Secrets (marked secret) never belong in the file: give them in the "
              "environment (the service reads /etc/garden-gateway/secrets.env) or in the "
              "file named by the key's _file twin (mqtt.password_file, influx.password_file, "
              "influx.token_file, api.operator_token_file, alerts.targets[].bot_token_file)."),
        ".SH KEYS",
    ]
    for table in tables:
        name = table.path or "top level"
        label = f" ({table.title})" if table.title else ""
        out += [f'.SS "{_roff(name + label)}"', _roff(table.description)]
        for key in table.keys:
            limits = _limits_text(key.limits, markdown=False)
            facts = [key.type + (f"; {limits}" if limits else "")]
            facts.append("required" if key.required
                         else f"default {key.default}" if key.default else "")
            if key.env:
                facts.append(f"environment {key.env}")
            out += [".TP", f'.B "{_roff(key.path)}"', _roff("; ".join(f for f in facts if f)),
                    ".br", _roff(key.description)]
    out += [
        ".SH FILES",
        ".TP",
        _roff("/etc/garden-gateway/config.yaml"),
        _roff("The installed configuration (never overwritten by install.sh)."),
        ".TP",
        _roff("/etc/garden-gateway/secrets.env"),
        _roff("NAME=value lines read by the service: passwords, tokens, any override."),
        ".SH SEE ALSO",
        ".BR garden-gateway (1)",
    ]
    return "\n".join(out) + "\n"


def _shown_default(value: object, root: Path) -> str:
    if isinstance(value, Path) and value.is_absolute():
        try:
            return str(value.relative_to(root))
        except ValueError:
            return str(value)
    if isinstance(value, float):
        return _number(value)
    return str(value)


def _option_lines(parser: argparse.ArgumentParser, root: Path) -> list[str]:
    out: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
        else:
            names = action.metavar if isinstance(action.metavar, str) else action.dest
        takes_value = action.nargs != 0
        if takes_value and action.option_strings:
            if isinstance(action.metavar, str):
                metavar = action.metavar
            elif action.choices is not None:
                metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
            else:
                metavar = action.dest.upper()
            names += f" {metavar}"
        text = (action.help or "").replace("%(default)s", str(action.default))
        notes: list[str] = []
        if action.required:
            notes.append("required")
        if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
            notes.append("repeatable")
        if action.choices is not None and action.metavar is not None:
            notes.append("one of: " + ", ".join(str(c) for c in action.choices))
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if takes_value and shown and "default" not in text:
            notes.append(f"default: {_shown_default(action.default, root)}")
        if notes:
            text = (text + " " if text else "") + f"({'; '.join(notes)})"
        out += [".TP", f'.B "{_roff(names)}"', _roff(text or "(no description)")]
    return out


def _commands(parser: argparse.ArgumentParser,
              prefix: str) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                yield full, helps.get(name, ""), sub
                yield from _commands(sub, full)


_EXIT_STATUS = (
    ("0", "Success: run stopped cleanly (SIGTERM, SIGINT), check-config found the file "
     "valid, doctor found nothing failed (warnings allowed)."),
    ("1", "Failure: run failed (a task failed for good; systemd restarts it), doctor found a "
     "check that failed, demo could not start a server."),
    ("2", "Bad configuration or usage: the config file is not valid (every problem is printed, "
     "naming the key), or the command line is wrong."),
)


def cli_man(parser: argparse.ArgumentParser, version: str, root: Path) -> str:
    out = [
        '.\\" GENERATED by python -m gateway.ops.docgen (./dev docs) from gateway/ops/cli.py.',
        '.\\" Do not edit: tests/test_docs.py fails when this page and the code disagree.',
        _th("GARDEN-GATEWAY", 1, version, "User Commands"),
        ".SH NAME",
        "garden-gateway \\- " + _roff(parser.description or ""),
        ".SH SYNOPSIS",
    ]
    commands = list(_commands(parser, ""))
    leaves = [c for c in commands if not any(o[0].startswith(c[0] + " ") for o in commands)]
    for name, _, sub in leaves:
        required = [a for a in sub._actions if a.required and a.option_strings]
        words = " ".join(f"{a.option_strings[-1]} {(a.metavar or a.dest.upper())}"
                         for a in required if isinstance(a.metavar, str | None))
        out += [".B garden-gateway", _roff(f"{name} {words}".strip() + " [OPTIONS]"), ".br"]
    out += [
        ".SH DESCRIPTION",
        _roff("The gateway of a park: it reads the access points' counters and the polder and "
              "garden sensors over MQTT, serial lines and Modbus RTU, keeps every reading in a "
              "durable spool until InfluxDB has it, and serves the park's status API and pages. "
              "python -m gateway is the same command."),
        ".SH COMMANDS",
    ]
    for name, help_text, sub in commands:
        out += [f'.SS "{_roff(name)}"', _roff(help_text)]
        if sub.description and sub.description != help_text:
            out += [".PP", _roff(sub.description)]
        out += _option_lines(sub, root)
    out += [".SH EXIT STATUS"]
    for code, text in _EXIT_STATUS:
        out += [".TP", f".B {code}", _roff(text)]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        _roff(f"{ENV_PREFIX}*"),
        _roff(f"Override any config key: {ENV_PREFIX}MQTT__PORT=1884, "
              f"{ENV_PREFIX}INFLUX__TOKEN=... (see garden-gateway.yaml(5))."),
        ".TP",
        ".B NOTIFY_SOCKET",
        _roff("Set by systemd (Type=notify): run reports READY, STATUS, STOPPING and the "
              "watchdog's pings on it; without it nothing of this happens."),
        ".SH FILES",
        ".TP",
        _roff("/etc/garden-gateway/config.yaml"),
        _roff("The config file of an installed gateway."),
        ".TP",
        _roff("/etc/garden-gateway/secrets.env"),
        _roff("Passwords and tokens as NAME=value lines, read by the service and by doctor."),
        ".TP",
        _roff("/var/lib/garden-gateway"),
        _roff("data_dir: spool.sqlite3 (readings not yet in InfluxDB), state.sqlite3 (devices "
              "and outages), history.sqlite3 (the charts)."),
        ".SH SEE ALSO",
        ".BR garden-gateway.yaml (5),",
        ".BR systemctl (1),",
        ".BR journalctl (1)",
    ]
    return "\n".join(out) + "\n"


# -- the command -------------------------------------------------------------------------------


def summary_markdown() -> str:
    """The park summary's schema (garden/<site>/summary), from its model."""
    from gateway.core.status import SUMMARY_SCHEMA, ParkSummary

    schema = ParkSummary.model_json_schema(by_alias=True, mode="serialization")
    return (
        "# The park summary (`garden/<site>/summary`)\n\n"
        "<!-- Generated by `python -m gateway.ops.docgen` from gateway/core/status.py "
        "(ParkSummary); do not edit. -->\n\n"
        "Each gateway publishes its park in one JSON message, retained, QoS 1, on\n"
        "`garden/<site>/summary`: when it changes (at most every\n"
        "`liveness.summary_min_interval_s`), at least every `liveness.report_interval_s`, and\n"
        "after every reconnection. The shipped bridge (`config/mosquitto-bridge.conf`) forwards\n"
        "it to the central broker at QoS 0, retained. No client MAC and no free text from a\n"
        "device is in it. A change that removes or renames a field raises `schema` (now "
        f"{SUMMARY_SCHEMA}); new fields may appear without it.\n\n"
        "```json\n" + json.dumps(schema, indent=2, ensure_ascii=False) + "\n```\n")


def generate(root: Path = ROOT) -> dict[str, str]:
    """Each generated page's path (relative to ``root``) and its text."""
    from gateway.ops.cli import build_parser

    tables = config_tables()
    version = _version(root)
    return {
        CONFIG_MD: config_markdown(tables),
        MAN_CONFIG: config_man(tables, version),
        MAN_CLI: cli_man(build_parser(), version, root),
        SUMMARY_MD: summary_markdown(),
    }


def stale(root: Path = ROOT) -> list[str]:
    """The generated pages whose file differs from what the code gives now."""
    out: list[str] = []
    for rel, text in generate(root).items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.ops.docgen",
        description="Generate the config reference and the man pages from the code.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming the pages that differ")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout (default: the one this module is in)")
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "pyproject.toml").is_file():
        parser.error(f"{root} is not a checkout of the gateway (no pyproject.toml); give --root")
    if args.check:
        differ = stale(root)
        for rel in differ:
            print(f"docgen: {rel} is out of date: run ./dev docs", file=sys.stderr)
        return 1 if differ else 0
    for rel, text in generate(root).items():
        path = root / rel
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            print(f"unchanged  {rel}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"written    {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
