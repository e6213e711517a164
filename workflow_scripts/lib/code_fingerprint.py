"""The code a stage runs, as a fingerprint: what makes a rule rerun when its code changes.

A stage's fingerprint covers its own module and every workflow_scripts module it imports (named
by their path in the package, e.g. `lib.documents`),
transitively (imports inside functions too: they run when the function does). Each module counts
as its syntax tree with the docstrings removed, so an edit to a comment, a docstring or the
formatting reruns nothing, while any change to what runs reruns the rules whose stages import it.
"""
import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "workflow_scripts"
ROOT = Path(__file__).resolve().parents[1]


def module_file(module):
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def imported_modules(tree):
    """The workflow_scripts modules an import statement anywhere in the tree names, as `lib.documents`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and f"{node.module}.".startswith(PACKAGE + "."):
            within = node.module[len(PACKAGE) + 1:]
            if module_file(within).is_file():
                yield within
            else:  # `from workflow_scripts.lib import common` names modules
                yield from (f"{within}.{alias.name}".lstrip(".") for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name[len(PACKAGE) + 1:] for alias in node.names if alias.name.startswith(PACKAGE + "."))


def closure(*modules):
    """The modules given and every workflow_scripts module they import, transitively."""
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(module_code(module)[0])
    return seen


def without_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=None)
def module_code(module):
    """(the workflow_scripts modules it imports, a digest of its syntax tree without docstrings), from
    one parse; ast.dump leaves out comments, positions and layout."""
    path = module_file(module)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imports = frozenset(imported_modules(tree))
    return imports, hashlib.sha1(ast.dump(without_docstrings(tree)).encode()).hexdigest()


def code_fingerprint(*entry_modules):
    """A short hash of the code that `python -m workflow_scripts.<entry>` runs, for each entry given."""
    digest = hashlib.sha1()
    for module in sorted(closure(*entry_modules)):
        digest.update(f"{module}:{module_code(module)[1]}\n".encode())
    return digest.hexdigest()[:16]
