"""A copy of this repository as a fresh git clone, and `dvc` run in it: helpers for the end-to-end tests."""

import re
import shutil
import subprocess

import yaml

from tests.helpers import REPO, child_env

SHARDS = {"00": "train/00", "01": "train/01", "val": "val", "test": "test"}


def run(cwd, *command, check=True):
    result = subprocess.run(command, cwd=cwd, env=child_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stages_run(result) -> set[str]:
    """Stages DVC ran (or restored from its run-cache), from its own output."""
    text = result.stdout + result.stderr
    return set(re.findall(r"Running stage '([^']+)'", text)) | set(re.findall(r"Stage '([^']+)' is cached", text))


def fresh_copy(destination):
    """The repository's files as a new git repository, like a clean clone."""
    files = run(REPO, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file() and not name.startswith(("metrics/", "dvc.lock")):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    run(destination, "git", "init", "-q")
    run(destination, "git", "add", "-A")
    run(destination, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")
    return destination


def edit_params(repo, edit):
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def tiny_training(raw):
    """The sample's data stages as they are, and a model small enough for a test."""
    raw["model"].update(block_size=32, n_layer=1, n_head=2, n_embd=32)
    raw["train"].update(
        max_steps=6,
        warmup_steps=2,
        decay_steps=12,
        val_check_interval=3,
        val_windows=8,
        checkpoint_every=3,
        log_every=1,
        num_workers=0,
    )
    raw["evaluate"].update(batch_size=64)


def copy_of(built, tmp_path):
    shutil.copytree(built, tmp_path / "repo", symlinks=True)
    return tmp_path / "repo"
