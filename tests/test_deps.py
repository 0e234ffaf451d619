"""dvc.yaml lists exactly the code each stage runs, read off the imports, so the two cannot drift."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

# Modules that cannot change an output's bytes: messages, start-up, progress bars, machine facts,
# the whole-or-nothing writer, and the params loader, its rules and its declarations (the loader
# refuses any field missing from the file, so no default in code decides an output:
# tests/test_params.py). The closure does not walk through them: what they import for their own
# checks is no stage's code.
CANNOT_CHANGE_OUTPUTS = {
    "core.errors",
    "core.cli",
    "core.progress",
    "core.files",
    "core.machine",
    "config.load",
    "config.rules",
    "config.schema",
}


def stages() -> dict[str, dict]:
    """Stage name -> its definition; a foreach stage's `do` body stands for all its items."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in spec.items()}


def module_file(module: str) -> Path:
    """pipeline/<a>/<b>.py for the module `a.b`."""
    return REPO / "pipeline" / (module.replace(".", "/") + ".py")


def pipeline_imports(path: Path) -> set[str]:
    """Modules of pipeline/ (`folder.module`) that `path` imports anywhere in it (top level or inside
    functions); `from pipeline.folder import name` counts when `name` is a module of that folder."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            dotted = node.module.removeprefix("pipeline.")
            if module_file(dotted).is_file():
                found.add(dotted)
            else:
                found |= {
                    f"{dotted}.{alias.name}" for alias in node.names if module_file(f"{dotted}.{alias.name}").is_file()
                }
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("pipeline.") for a in node.names if a.name.startswith("pipeline.")}
    return found


def closure(script: Path) -> set[str]:
    """Every pipeline module the script reaches, directly or through other pipeline modules that can
    change an output."""
    seen, todo = set(), pipeline_imports(script)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            if module not in CANNOT_CHANGE_OUTPUTS:
                todo |= pipeline_imports(module_file(module))
    return seen


def script_of(stage: dict) -> str:
    (script,) = re.findall(r"\bstages/\w+\.py\b", stage["cmd"])
    return script


@pytest.mark.parametrize("name", list(stages()))
def test_every_module_a_stage_runs_is_in_its_deps_and_no_other(name):
    stage = stages()[name]
    script = script_of(stage)
    deps = {dep for dep in stage["deps"] if isinstance(dep, str)}
    assert script in deps, f"{name}: its own script {script} is not in its deps"
    needed = {str(module_file(m).relative_to(REPO)) for m in closure(REPO / script) - CANNOT_CHANGE_OUTPUTS}
    listed = {dep for dep in deps if dep.startswith("pipeline/")}
    missing, extra = sorted(needed - listed), sorted(listed - needed)
    assert not missing, (
        f"dvc.yaml: stage {name} runs {', '.join(missing)} (imported by {script}) but does not list it in deps"
    )
    assert not extra, f"dvc.yaml: stage {name} lists {', '.join(extra)} in deps but never imports it"


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "from pipeline.core import cli\nfrom pipeline.tokenizer import corpus\n\n"
        "def f():\n    from pipeline.encode.token_files import x\n    import pipeline.model.gpt\n"
    )
    assert pipeline_imports(script) == {"core.cli", "tokenizer.corpus", "encode.token_files", "model.gpt"}
    assert {"ingest.jsonl", "tokenizer.corpus", "encode.token_files", "model.gpt"} <= closure(script)


def test_modules_left_out_of_deps_exist():
    for module in CANNOT_CHANGE_OUTPUTS:
        assert module_file(module).is_file(), module


# The data-preparation layers start their workers fast: no torch, no Lightning anywhere in them
DATA_PREPARATION = sorted(
    f"{path.parent.name}.{path.stem}"
    for folder in ("core", "config", "ingest", "tokenizer", "encode")
    for path in (REPO / "pipeline" / folder).glob("*.py")
    if path.stem != "__init__"
)
# numba (~110 MB, half a second) loads only where a compiled encoder is built: in the workers
NO_COMPILER = ["encode.pretokenize", "encode.encoder", "tokenizer.pieces", "export.hf"]


@pytest.mark.parametrize(
    "module, forbidden",
    [(m, ("torch", "pytorch_lightning", "lightning_fabric")) for m in DATA_PREPARATION]
    + [(m, ("pytorch_lightning", "lightning_fabric")) for m in ("evaluation.evaluate", "model.gpt")]
    + [(m, ("numba",)) for m in NO_COMPILER],
)
def test_modules_import_no_heavier_framework_than_their_concern_needs(module, forbidden):
    """Data preparation starts its workers fast (no torch); the model and evaluation know no Lightning."""
    probe = f"import sys, pipeline.{module}; print(' '.join(m for m in {forbidden!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == [], f"pipeline.{module} imports {loaded.stdout.strip()}"
