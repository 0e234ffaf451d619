"""The package's layers run one way: a module imports from its own folder and the folders below it only.

Bottom to top (pipeline/__init__.py says what each holds):
core, config, ingest, tokenizer, encode, model, training, evaluation | export, ops.
"""

import ast
import importlib
import importlib.util
import re

import pytest

from tests.helpers import REPO

LAYERS = ["core", "config", "ingest", "tokenizer", "encode", "model", "training", ("evaluation", "export"), "ops"]
FLOOR = {folder: i for i, layer in enumerate(LAYERS) for folder in (layer if isinstance(layer, tuple) else (layer,))}
MODULES = sorted(path for path in (REPO / "pipeline").rglob("*.py") if path.parent != REPO / "pipeline")


def folder_of(dotted: str) -> str | None:
    """The layer folder a `pipeline.<folder>...` import names (None for anything outside the package)."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "pipeline" and len(parts) > 1 else None


def imports(path) -> list[tuple[int, str]]:
    """(line, dotted module) of every pipeline import in a file, top level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if folder_of(name)]


def test_every_folder_of_the_package_is_a_layer():
    folders = {path.parent.name for path in MODULES}
    assert folders == set(FLOOR), f"folders not placed in LAYERS: {sorted(folders ^ set(FLOOR))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(REPO / "pipeline")))
def test_a_module_imports_only_its_own_folder_and_the_layers_below(path):
    here = path.parent.name
    upward = [
        f"line {line}: {name} ({folder_of(name)} is not below {here})"
        for line, name in imports(path)
        if folder_of(name) != here and FLOOR[folder_of(name)] >= FLOOR[here]
    ]
    assert not upward, f"{path.relative_to(REPO)} imports upward or sideways: " + "; ".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """A test of the test: an import from a higher layer, even inside a function, is found."""
    module = tmp_path / "ingest" / "reader.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from pipeline.training.windows import Windows\n")
    assert [(line, name, FLOOR[folder_of(name)] > FLOOR["ingest"]) for line, name in imports(module)] == [
        (2, "pipeline.training.windows", True)
    ]


@pytest.mark.parametrize("path", sorted((REPO / "bench").glob("*.py")), ids=lambda path: path.name)
def test_the_benchmarks_name_what_the_package_holds(path):
    """bench/ runs outside the tests, so a moved module or a renamed name would surface only when a
    benchmark fails mid-run; this checks every `from pipeline... import name`, in code or in the code
    strings that benchmarks hand to a child process."""
    named = re.findall(r"from (pipeline(?:\.\w+)*) import (\w+)", path.read_text())
    for module, name in named:
        assert hasattr(importlib.import_module(module), name) or importlib.util.find_spec(f"{module}.{name}"), (
            f"{path.name}: from {module} import {name}"
        )
