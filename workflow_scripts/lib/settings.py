"""Each setting's one definition, in config/schema.yaml: its type, range or choices, default,
whether it changes results (`x-changes-results: false` where it does not, e.g. eval_every), and
its `description`: the stage's --help line and the config/README.md table's (config/settings_tables.py).

The schema is the owner because Snakemake's config check already reads it and it is the file a
user of the workflow looks at; everything else comes from it or is held equal to it by a test:
config.yaml (the demo's values, with the user's comments) equals the defaults, the stages' options
are made here, the README tables' defaults match, and a training run's identity (which checkpoints
a rerun resumes) takes every setting that changes results.
"""
import argparse
import dataclasses
import functools
import re
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
CONVERTERS = {"integer": int, "number": float, "string": str}


@functools.cache
def schema():
    # libyaml's loader where PyYAML has it: the pure-Python one took 40 ms of every stage's start
    return yaml.load(SCHEMA_PATH.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def resolved(definition):
    """A definition with the shared one its `$ref` names (#/$defs/...) filled in under its own keys
    (the training sections' lr, seed, ... are one definition each, with a default per section)."""
    if "$ref" not in definition:
        return definition
    shared = schema()["$defs"][definition["$ref"].removeprefix("#/$defs/")]
    return {**resolved(shared), **{key: value for key, value in definition.items() if key != "$ref"}}


@functools.cache
def definitions(section):
    """{key: its definition} of a config section; `corpora.extra` names the keys of each entry of
    that list."""
    node = schema()
    for name in section.split("."):
        node = node["properties"][name]
        node = node.get("items", node)
    return {key: resolved(definition) for key, definition in node["properties"].items()}


def changes_results(definition):
    return definition.get("x-changes-results", True)


def bounded(convert, definition, option):
    """An argparse type that converts and checks the definition's pattern and range, naming the option."""
    def parse(text):
        value = convert(text)
        if "pattern" in definition and not re.search(definition["pattern"], value):
            raise argparse.ArgumentTypeError(f"{option} {text} does not match {definition['pattern']} "
                                             "(config/schema.yaml)")
        low, high = definition.get("minimum"), definition.get("maximum")
        above, below = definition.get("exclusiveMinimum"), definition.get("exclusiveMaximum")
        if ((low is not None and value < low) or (high is not None and value > high)
                or (above is not None and value <= above) or (below is not None and value >= below)):
            raise argparse.ArgumentTypeError(f"{option} {text} is out of range (config/schema.yaml)")
        return value
    return parse


def option_arguments(definition, option):
    """argparse's keywords for a setting: type, choices or nargs, and its default."""
    if "enum" in definition:
        return {"choices": definition["enum"], "type": type(definition["enum"][0]), "default": definition["default"]}
    kind = definition["type"]
    if kind == "boolean":
        return {"action": argparse.BooleanOptionalAction, "default": definition["default"]}
    if kind == "array":  # an empty list is `--key` alone, where the schema allows it
        return {**option_arguments({**definition["items"], "default": None}, option),
                "nargs": "+" if definition.get("minItems") else "*", "default": definition["default"]}
    return {"type": bounded(CONVERTERS[kind], definition, option), "default": definition["default"]}


def add_settings(ap, section, *keys):
    """--key options for the given settings of a config section, from their definitions."""
    for key in keys:
        option, definition = "--" + key.replace("_", "-"), definitions(section)[key]
        source = f"config.yaml {section}.{key}"
        help_text = f"{definition['description']} ({source})".replace("%", "%%")  # argparse formats help with %
        ap.add_argument(option, help=help_text, **option_arguments(definition, option))


def identity_settings(settings, *sections):
    """The settings (a mapping of the stage's values) that make a run what it is: each of the
    sections' settings that the stage takes and that changes results."""
    return {key: settings[key] for section in sections for key, definition in definitions(section).items()
            if key in settings and changes_results(definition)}


def typed(settings_class, options):
    """A stage's options (a mapping: vars() of its parsed arguments) as the frozen dataclass a
    function below the stage's run takes, so that no code below run reads the argparse namespace."""
    return settings_class(**{field.name: options[field.name] for field in dataclasses.fields(settings_class)})
