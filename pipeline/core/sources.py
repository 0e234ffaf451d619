"""The source files a stage runs, read off the imports: what dvc.yaml lists as a stage's code deps
(tests/test_deps.py holds the two equal) and what a checkpoint records of the code that made it.

A script's closure is every module of the package it imports, directly or through other modules,
anywhere in them (inside functions too). It does not walk through the modules that cannot change
an output (pipeline.NEUTRAL_MODULES): what they import for their own checks is no stage's code.
"""

import ast
import hashlib
from pathlib import Path

from pipeline import NEUTRAL_MODULES

PACKAGE = Path(__file__).resolve().parent.parent


def module_file(module: str, package: Path = PACKAGE) -> Path:
    """<package>/<a>/<b>.py for the module `a.b`."""
    return package / (module.replace(".", "/") + ".py")


def package_imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """Modules of the package (`folder.module`) that `path` imports anywhere in it; `from
    pipeline.folder import name` counts when `name` is a module of that folder."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            dotted = node.module.removeprefix("pipeline.")
            if module_file(dotted, package).is_file():
                found.add(dotted)
            else:
                named = (f"{dotted}.{alias.name}" for alias in node.names)
                found |= {module for module in named if module_file(module, package).is_file()}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("pipeline.") for a in node.names if a.name.startswith("pipeline.")}
    return found


def closure(script: Path, package: Path = PACKAGE) -> set[str]:
    """Every module of the package the script reaches, through modules that can change an output."""
    seen, todo = set(), package_imports(script, package)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            if module not in NEUTRAL_MODULES:
                todo |= package_imports(module_file(module, package), package)
    return seen


def code_files(script: Path, package: Path = PACKAGE) -> list[Path]:
    """The script and every module of its closure that can change an output: a stage's code deps."""
    return [script] + [module_file(module, package) for module in sorted(closure(script, package) - NEUTRAL_MODULES)]


def fingerprint(script: Path, package: Path = PACKAGE) -> dict[str, str]:
    """sha256 of each of code_files, named relative to the repository (`pipeline/training/train.py`)."""
    root = package.parent
    return {
        str(path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path.name): (
            hashlib.sha256(path.read_bytes()).hexdigest()
        )
        for path in code_files(script, package)
    }
