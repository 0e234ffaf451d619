"""Tokenize once, share through a DVC remote, run shard stages side by side, rebuild bit for bit."""

import subprocess
import time

import psutil
import pytest
import yaml

from pipeline.encode import token_files
from tests.helpers import REPO, child_env
from tests.repo import copy_of, edit_params, fresh_copy, run, stages_run

pytestmark = pytest.mark.slow  # clones, a DVC remote and full runs


def test_colleague_pulls_every_output_and_runs_nothing_or_the_tokenized_shards_and_tokenizes_nothing(built, tmp_path):
    """A colleague's clone that pulls every output from the remote is up to date and reruns nothing;
    one that pulls only the tokenizer and the arrays, and changes a train param, runs train, export and
    evaluate alone, on the shared arrays."""
    origin = copy_of(built, tmp_path)
    remote = tmp_path / "remote"
    run(origin, "dvc", "remote", "add", "--default", "shared", str(remote))
    run(origin, "dvc", "push")
    run(origin, "git", "add", "-A")
    run(origin, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run on the sample")

    everything = tmp_path / "everything"
    run(tmp_path, "git", "clone", "-q", str(origin), str(everything))
    run(everything, "dvc", "pull")
    assert "Data and pipelines are up to date" in run(everything, "dvc", "status").stdout
    assert stages_run(run(everything, "dvc", "repro")) == set()

    colleague = tmp_path / "colleague"
    run(tmp_path, "git", "clone", "-q", str(origin), str(colleague))
    run(colleague, "dvc", "pull", "tokenizer", "pretokenize")
    assert (colleague / "data/tokens/00.bin").read_bytes() == (origin / "data/tokens/00.bin").read_bytes()
    assert not (colleague / "data/raw").exists() and not (colleague / "data/corpus").exists()

    edit_params(colleague, lambda raw: raw["train"].update(lr=0.001))  # their own model, on the shared tokens
    result = run(colleague, "dvc", "repro", "--allow-missing")
    assert stages_run(result) == {"train", "export", "evaluate"}
    assert not (colleague / "data/raw").exists()


def test_one_pulled_shard_is_enough_for_its_own_stage(built, tmp_path):
    origin = copy_of(built, tmp_path)
    run(origin, "dvc", "remote", "add", "--default", "shared", str(tmp_path / "remote"))
    run(origin, "dvc", "push", "pretokenize@val")
    colleague = tmp_path / "colleague"
    run(origin, "git", "add", "-A")
    run(origin, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "remote")
    run(tmp_path, "git", "clone", "-q", str(origin), str(colleague))
    run(colleague, "dvc", "pull", "pretokenize@val")
    assert sorted(p.name for p in (colleague / "data/tokens").iterdir()) == sorted(
        f"val{suffix}" for suffix in token_files.SUFFIXES
    )
    assert stages_run(run(colleague, "dvc", "repro", "--allow-missing", "pretokenize@val")) == set()


def commands() -> list[list[str]]:
    """The command lines of this test's descendant processes (DVC runs each stage's command as one)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            found.append(child.cmdline())
        except psutil.Error:
            pass
    return found


def test_two_shard_stages_run_at_once_in_one_clone_and_both_land_in_dvc_lock(tmp_path):
    repo = fresh_copy(tmp_path)
    edit_params(repo, lambda raw: raw["pretokenize"].update(workers=1))
    run(repo, "dvc", "repro", "tokenizer", "download@00", "download@01")
    processes = [
        subprocess.Popen(
            ["dvc", "--wait-for-lock", "repro", "--single-item", f"pretokenize@{key}"],
            cwd=repo,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for key in ("00", "01")
    ]
    overlapped = False
    while any(p.poll() is None for p in processes):  # both stages' commands alive at the same moment
        overlapped |= all(any(f"pretokenize.py {key}" in " ".join(c) for c in commands()) for key in ("00", "01"))
        time.sleep(0.01)
    outputs = [p.communicate()[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert overlapped, "the two stages ran one after the other"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {"pretokenize@00", "pretokenize@01"} <= set(lock)
    assert "up to date" in run(repo, "dvc", "status", "pretokenize@00", "pretokenize@01").stdout
    arrays = sorted((repo / "data/tokens").glob("0[01].*"))
    concurrent = [path.read_bytes() for path in arrays]
    run(repo, "dvc", "repro", "--force", "--single-item", "pretokenize@00", "pretokenize@01")  # one after the other
    assert [path.read_bytes() for path in arrays] == concurrent and len(arrays) == 2 * len(token_files.SUFFIXES)


def test_a_clean_copy_rebuilds_the_data_artifacts_that_the_committed_lock_records(built):
    """`built` is a fresh copy of this repository after `dvc repro` (its model made tiny): every raw
    shard, corpus part, tokenizer file and token array it made has the hash the committed dvc.lock
    records. Training's own reproducibility is checked where it reruns (tests/test_faults.py)."""
    committed = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    made = yaml.safe_load((built / "dvc.lock").read_text())["stages"]
    data_stages = [
        name for name in committed if name.split("@")[0] in ("download", "corpus", "tokenizer", "pretokenize")
    ]
    assert len(data_stages) == 11
    for name in data_stages:
        assert made[name]["outs"] == committed[name]["outs"], name
