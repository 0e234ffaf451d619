"""dvc.yaml lists exactly the code each stage runs, read off the imports, so the two cannot drift."""

import re
import subprocess
import sys

import pytest
import yaml

from pipeline import NEUTRAL_MODULES
from pipeline.core.sources import closure, module_file, package_imports
from tests.helpers import REPO


def stages() -> dict[str, dict]:
    """Stage name -> its definition; a foreach stage's `do` body stands for all its items."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in spec.items()}


def script_of(stage: dict) -> str:
    (script,) = re.findall(r"\bstages/\w+\.py\b", stage["cmd"])
    return script


@pytest.mark.parametrize("name", list(stages()))
def test_every_module_a_stage_runs_is_in_its_deps_and_no_other(name):
    stage = stages()[name]
    script = script_of(stage)
    deps = {dep for dep in stage["deps"] if isinstance(dep, str)}
    assert script in deps, f"{name}: its own script {script} is not in its deps"
    needed = {str(module_file(m).relative_to(REPO)) for m in closure(REPO / script) - NEUTRAL_MODULES}
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
    assert package_imports(script) == {"core.cli", "tokenizer.corpus", "encode.token_files", "model.gpt"}
    assert {"ingest.jsonl", "tokenizer.corpus", "encode.token_files", "model.gpt"} <= closure(script)


def test_modules_left_out_of_deps_exist():
    for module in NEUTRAL_MODULES:
        assert module_file(module).is_file(), module


# The data-preparation layers start their workers fast: no torch, no Lightning anywhere in them
DATA_PREPARATION = sorted(
    f"{path.parent.name}.{path.stem}"
    for folder in ("core", "config", "ingest", "tokenizer", "encode")
    for path in (REPO / "pipeline" / folder).glob("*.py")
    if path.stem != "__init__"
)
# numba (~110 MB, half a second) loads only where compiled code runs: pretokenize's workers, the
# exact trainer's child process, the main process that merges word tables; not in counting workers
NO_COMPILER = [
    "encode.pretokenize", "encode.encoder", "tokenizer.pieces", "export.hf", "tokenizer.word_cutting",
    "tokenizer.exact_bpe", "tokenizer.train",
]  # fmt: skip


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
