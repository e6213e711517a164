"""config/README.md's tables of settings, made from their definitions (config/schema.yaml): each
key's type and range, default and description, so that the page, the stages' --help and the
config check all say what the schema says.

    python -m workflow_scripts.lib.workflow.settings_tables config/README.md

rewrites, in place, the table after each `<!-- settings: SECTION [KEY ...] -->` line: SECTION is a
config section or, dotted, the entries of one of its lists (`corpora.extra`, `sft.data`); the keys,
when given, pick some of its settings. tests/test_settings.py fails when a table differs from what
this writes.
"""
import re
import sys
from pathlib import Path

from workflow_scripts.lib.settings import definitions

MARKER = re.compile(r"^<!-- settings: ([\w.]+)((?: \w+)*) -->$")
HEADER = ["| key | type, range | default | meaning |", "|---|---|---|---|"]
TYPE_NAMES = {"integer": "integer", "number": "number", "boolean": "boolean", "string": "text", "object": "mapping"}


def flow(value):
    """A value as YAML flow text, the way config.yaml would write it."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(flow, value)) + "]"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float) and abs(value) >= 1e6:
        return f"{value:.6g}".replace("e+", "e")  # 1e12, not 1000000000000.0
    return '""' if value == "" else str(value)


def value_range(definition):
    low, high = definition.get("minimum"), definition.get("maximum")
    above, below = definition.get("exclusiveMinimum"), definition.get("exclusiveMaximum")
    if (low is not None or above is not None) and (high is not None or below is not None):
        if low is not None and high is not None:
            return f" {low}–{high}"
        left, right = ("[", low) if low is not None else ("(", above), ("]", high) if high is not None else (")", below)
        return f" in {left[0]}{left[1]}, {right[1]}{right[0]}"
    for bound, sign in ((low, "≥"), (above, ">"), (high, "≤"), (below, "<")):
        if bound is not None:
            return f" {sign} {bound}"
    return ""


def type_cell(definition):
    if "enum" in definition:
        return " \\| ".join(f"`{flow(option)}`" for option in definition["enum"])
    if "oneOf" in definition and "type" not in definition:
        return " or ".join(type_cell(choice) for choice in definition["oneOf"])
    kind = definition.get("type", "object")
    if kind == "array":
        return "list of " + type_cell(definition.get("items", {}))
    kinds = kind if isinstance(kind, list) else [kind]
    named = [TYPE_NAMES[name] for name in kinds if name != "null"]
    return " or ".join(named) + value_range(definition) + (" or null" if "null" in kinds else "")


def row(key, definition):
    default = f"`{flow(definition['default'])}`" if "default" in definition else "—"
    meaning = definition["description"].replace("|", "\\|")
    return f"| `{key}` | {type_cell(definition)} | {default} | {meaning} |"


def table(section, keys=()):
    """The markdown lines of a section's settings (or of the given keys, in that order)."""
    settings = definitions(section)
    return HEADER + [row(key, settings[key]) for key in (keys or settings)]


def rewritten(text):
    """The page with the table after each marker made anew."""
    lines, out = text.split("\n"), []
    position = 0
    while position < len(lines):
        line = lines[position]
        out.append(line)
        position += 1
        marker = MARKER.match(line)
        if marker:
            while position < len(lines) and lines[position].startswith("|"):
                position += 1
            out += table(marker.group(1), marker.group(2).split())
    return "\n".join(out)


if __name__ == "__main__":
    page = Path(sys.argv[1])
    page.write_text(rewritten(page.read_text(encoding="utf-8")), encoding="utf-8")
