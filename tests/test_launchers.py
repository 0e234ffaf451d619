"""Every process a test starts runs the code under test: the checkout the tests are in, not whichever
checkout the environment installed (a second clone, a worktree, a mutant's copy)."""

import shutil
import subprocess
import sys

from tests.helpers import REPO


def test_a_child_started_by_the_tests_of_another_checkout_imports_that_checkouts_code(tmp_path):
    """A copy of the tests and the package, installed nowhere: a process its tests start, as every
    launcher of the tests starts one (tests.helpers.child_env, which tests.training.start_training and
    the dvc runs use), from another directory, imports the copy's `pipeline`; so a checkpoint's code
    fingerprint is the copy's, and a killed training resumes under it."""
    copy = tmp_path / "checkout"
    for part in ("pipeline", "tests"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import subprocess, sys; from tests.helpers import child_env; "
        "print(subprocess.run([sys.executable, '-c', 'import pipeline; print(pipeline.__file__)'], "
        f"env=child_env(), cwd={str(elsewhere)!r}, capture_output=True, text=True, check=True).stdout.strip())"
    )
    seen = subprocess.run([sys.executable, "-c", probe], cwd=copy, capture_output=True, text=True, env={"PATH": ""})
    assert seen.returncode == 0, seen.stderr[-2000:]
    assert seen.stdout.strip() == str(copy / "pipeline/__init__.py")
