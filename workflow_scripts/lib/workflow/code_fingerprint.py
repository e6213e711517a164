"""The code a stage runs, as a fingerprint: what makes a rule rerun when its code changes.

A stage's fingerprint covers every definition (function, class, module-level assignment or
import) that its module reaches from what it runs, in it and in other workflow_scripts modules: the names it
uses, followed through imports and through the definitions they use in turn. A module's
statements that are neither definitions nor imports run whenever it is imported, so they count
for every stage that imports it. Where a use cannot be followed by name (a module used other than
as `module.name`, or a name its module does not define at top level) the whole module counts:
missing a rerun is worse than an extra one.

Each definition counts as its syntax tree with docstrings removed, so comments, docstrings and
layout rerun nothing, an unused new definition reruns nothing, and a change to a function that
only evaluation reaches reruns evaluation, never pretraining.
"""
import ast
import functools
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "workflow_scripts"
ROOT = Path(__file__).resolve().parents[2]
ON_IMPORT = "<on import>"  # the item of a module's statements that run when it is imported
WHOLE = "<whole module>"


def module_file(module, root=ROOT):
    return root.joinpath(*module.split(".")).with_suffix(".py")


@dataclass(frozen=True)
class Module:
    """One module's top level: the statements binding each name, what its imports of the package
    name, and the statements that run on import; with each item's uses and digest, worked out once."""
    tree: ast.Module
    bindings: dict  # name -> [statement]
    imports: dict  # local name -> (module, name), name None for a module bound as a whole
    on_import: list
    uses: dict = field(default_factory=dict)  # name -> used_names of its statements
    digests: dict = field(default_factory=dict)

    def statements(self, name):
        if name == WHOLE:
            return self.tree.body
        return self.on_import if name == ON_IMPORT else self.bindings.get(name, [])

    def used_by(self, name):
        if name not in self.uses:
            self.uses[name] = used_names(self.statements(name))
        return self.uses[name]

    def digest(self, name):
        if name not in self.digests:
            text = "\n".join(ast.dump(statement) for statement in self.statements(name))
            self.digests[name] = hashlib.sha1(text.encode()).hexdigest()
        return self.digests[name]


def without_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def bound_names(statement):
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    return [node.id for target in targets for node in ast.walk(target) if isinstance(node, ast.Name)]


def is_package_import(statement, alias):
    if isinstance(statement, ast.ImportFrom):
        return statement.level == 0 and f"{statement.module}.".startswith(PACKAGE + ".")
    return alias.name.startswith(PACKAGE + ".")


def package_imports(tree, root):
    """What each name bound by an import of a workflow_scripts module anywhere in the tree refers to
    (imports inside functions too: they run when the function does)."""
    imports = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and is_package_import(node, None):
            within = node.module[len(PACKAGE) + 1:]
            for alias in node.names:
                if module_file(within, root).is_file():
                    imports[alias.asname or alias.name] = (within, alias.name)
                else:  # `from workflow_scripts.lib.corpus import documents` names a module
                    imports[alias.asname or alias.name] = (f"{within}.{alias.name}".lstrip("."), None)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_package_import(node, alias):
                    imports[alias.asname or alias.name] = (alias.name[len(PACKAGE) + 1:], None)
    return imports


def parse(source, root):
    tree = without_docstrings(ast.parse(source))
    bindings, on_import = defaultdict(list), []
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bindings[statement.name].append(statement)
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and bound_names(statement):
            for name in bound_names(statement):
                bindings[name].append(statement)
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:  # `import numpy as np` defines np (the package's are in imports)
                if not is_package_import(statement, alias):
                    bindings[(alias.asname or alias.name).split(".")[0]].append(statement)
        else:
            on_import.append(statement)
    return Module(tree, dict(bindings), package_imports(tree, root), on_import)


def used_names(statements):
    """{each name the statements use: the attributes read from it, or None where it is used bare}.
    A module bound to a name is followed through those attributes alone."""
    bare, attributes = set(), defaultdict(set)
    for statement in statements:
        bases = set()
        for node in ast.walk(statement):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                attributes[node.value.id].add(node.attr)
                bases.add(id(node.value))
        bare.update(node.id for node in ast.walk(statement) if isinstance(node, ast.Name) and id(node) not in bases)
    return {**attributes, **dict.fromkeys(bare)}


def packages_of(module):
    """The __init__ modules that run before a module: `lib.corpus.documents` -> `__init__`, `lib.__init__`,
    `lib.corpus.__init__`."""
    parts = module.split(".")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return [".".join([*parts[:depth], "__init__"]) for depth in range(len(parts))]


@functools.cache
def parsed_file(path, root):
    return parse(path.read_text(encoding="utf-8"), root)


class Package:
    """The workflow_scripts modules under root; sources replaces a module's text (the tests edit
    definitions in memory, and modules they leave alone are parsed once for all of them)."""

    def __init__(self, root=ROOT, sources=None):
        self.root, self.sources = root, dict(sources or {})

    @functools.cache
    def module(self, name):
        if name in self.sources:
            return parse(self.sources[name], self.root)
        return parsed_file(module_file(name, self.root), self.root)

    def uses(self, module, item):
        """The items (module, name) that one item's statements reach in one step."""
        code = self.module(module)
        for name, attributes in code.used_by(item).items():
            if name in code.bindings:
                yield module, name
            elif name in code.imports:
                target, imported = code.imports[name]
                if imported or attributes is None:
                    yield target, imported or WHOLE
                else:
                    yield from ((target, attribute) for attribute in attributes)

    def follow(self, module, name):
        """The items one item leads to: its module's import-time statements (and so the modules it
        imports), what its statements use, and the whole module where the name is not a top-level
        definition there."""
        code = self.module(module)
        if name in (ON_IMPORT, WHOLE):
            yield from ((target, ON_IMPORT) for target, _ in code.imports.values())
            yield from ((package, ON_IMPORT) for package in packages_of(module))
        else:
            yield module, ON_IMPORT
            if name not in code.bindings:  # imported there from another module, or not found
                target, imported = code.imports.get(name, (module, WHOLE))
                yield target, imported or WHOLE
                return
        yield from self.uses(module, name)

    def reached(self, *entries):
        """Every item (module, name) that the entry modules reach from what they run on import (a
        stage's call of stage_cli, or its `if __name__ == "__main__":` block)."""
        seen, todo = set(), [(entry, ON_IMPORT) for entry in entries]
        while todo:
            item = todo.pop()
            if item not in seen:
                seen.add(item)
                todo.extend(self.follow(*item))
        return seen

    def fingerprint(self, *entries):
        lines = sorted(f"{module}:{name}:{self.module(module).digest(name)}"
                       for module, name in self.reached(*entries))
        return hashlib.sha1("\n".join(lines).encode()).hexdigest()[:16]

    def imported_modules(self, module):
        return {target for target, _ in self.module(module).imports.values()}


@functools.cache
def code_fingerprint(*entry_modules):
    """A short hash of the code that `python -m workflow_scripts.<entry>` runs, for each entry given."""
    return PACKAGE_CODE.fingerprint(*entry_modules)


PACKAGE_CODE = Package()
