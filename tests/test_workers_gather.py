"""Many machines, one lock, simulated: a shared DVC remote, worker clones running the SLURM recipe's
logic as plain processes, and a coordinator that gathers their branches."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from pipeline.encode import token_files
from tests.helpers import REPO, child_env
from tests.repo import copy_of, edit_params, run, stages_run

pytestmark = pytest.mark.slow  # clones, a DVC remote, several runs of the shard stages

NEW = {"02": "train/00", "03": "train/01"}  # new shard keys, and the sample file each one copies


@pytest.fixture
def base(built, tmp_path):
    """The built repository as the team's: two new shards in params, a DVC remote holding its outputs."""
    repo = copy_of(built, tmp_path)
    for key, source in NEW.items():
        shutil.copyfile(repo / f"data/sample/{source}.jsonl.zst", repo / f"data/sample/train/{key}.jsonl.zst")
    edit_params(
        repo, lambda raw: raw["data"]["shards"].update({key: {"path": f"train/{key}", "sha256": None} for key in NEW})
    )
    run(repo, "dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote"))
    run(repo, "dvc", "push")
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two new shards, a shared remote")
    run(repo, "git", "branch", "-M", "main")
    return repo


def task(base, index: int, count: int, keys: list[str], work, job: str = "42", **env) -> subprocess.Popen:
    """One SLURM array task of scripts/slurm-prepare.sbatch, as a plain process (own process group)."""
    variables = {
        **child_env(),
        "SLURM_SUBMIT_DIR": str(base),
        "SLURM_ARRAY_TASK_ID": str(index),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_JOB_ID": job,
        "WORK_DIR": str(work),
        "GIT_AUTHOR_NAME": "w",
        "GIT_AUTHOR_EMAIL": "w@w",
        "GIT_COMMITTER_NAME": "w",
        "GIT_COMMITTER_EMAIL": "w@w",
        **env,
    }
    return subprocess.Popen(
        ["bash", str(base / "scripts/slurm-prepare.sbatch"), *keys],
        cwd=base,
        env=variables,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def lock(repo) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def test_two_workers_prepare_shards_at_once_and_the_gather_joins_their_locks(base, tmp_path):
    workers = [task(base, i, 2, list(NEW), tmp_path / f"w{i}") for i in range(2)]  # at the same time
    outputs = [finished(worker) for worker in workers]
    assert "shards 02" in outputs[0] and "shards 03" in outputs[1]
    branches = run(base, "git", "branch", "--list", "worker/*").stdout.split()
    assert branches == ["worker/slurm-42-0", "worker/slurm-42-1"]

    gathered = subprocess.run(
        ["bash", str(base / "scripts/slurm-prepare.sbatch")],
        cwd=base,
        capture_output=True,
        text=True,
        env={
            **child_env(),
            "GATHER_JOB": "42",
            "SLURM_SUBMIT_DIR": str(base),
            "GIT_AUTHOR_NAME": "c",
            "GIT_AUTHOR_EMAIL": "c@c",
            "GIT_COMMITTER_NAME": "c",
            "GIT_COMMITTER_EMAIL": "c@c",
        },
    )
    assert gathered.returncode == 0, gathered.stderr
    assert not run(base, "git", "status", "--porcelain", "--untracked-files=no").stdout.strip()
    stages = lock(base)
    for i, key in enumerate(NEW):
        assert stages[f"pretokenize@{key}"] == lock(tmp_path / f"w{i}")[f"pretokenize@{key}"]  # the worker's hashes

    run(base, "dvc", "pull", *[f"pretokenize@{key}" for key in NEW])
    for i, key in enumerate(NEW):
        for suffix in token_files.SUFFIXES:
            mine = (base / f"data/tokens/{key}{suffix}").read_bytes()
            assert mine == (tmp_path / f"w{i}" / f"data/tokens/{key}{suffix}").read_bytes()
    planned = stages_run(run(base, "dvc", "repro", "--allow-missing", "--dry"))
    assert not planned & {f"{stage}@{key}" for stage in ("download", "pretokenize") for key in NEW}, planned


def test_workers_count_the_tokenizers_text_and_the_gather_trains_from_their_tables(base, tmp_path):
    """Before any tokenizer exists: two workers count one corpus part each (`--words`); the gathering
    machine pulls their word tables and trains the tokenizer without counting anything again."""
    edit_params(base, lambda raw: raw["corpus"].update(shards=list(NEW)))
    run(base, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "the tokenizer on 02 and 03")
    workers = [task(base, i, 2, ["--words", *NEW], tmp_path / f"w{i}", job="9") for i in range(2)]
    outputs = [finished(worker) for worker in workers]
    assert "words of shards 02" in outputs[0] and "words of shards 03" in outputs[1]
    run(base, "pile-gpt", "gather", "worker/slurm-9-0", "worker/slurm-9-1")
    stages = lock(base)
    for i, key in enumerate(NEW):
        assert stages[f"words@{key}"] == lock(tmp_path / f"w{i}")[f"words@{key}"]
    for folder in ("data/corpus", "data/words"):  # the old corpus.shards' parts: no stage makes them now
        shutil.rmtree(base / folder)
    run(base, "dvc", "pull", "word-rules", *[f"{stage}@{key}" for key in NEW for stage in ("corpus", "words")])
    planned = stages_run(run(base, "dvc", "repro", "--allow-missing", "--dry", "tokenizer"))
    assert planned == {"tokenizer"}, planned  # nothing downloaded, sampled or counted again
    trained = run(base, "dvc", "repro", "--allow-missing", "tokenizer")
    assert stages_run(trained) == {"tokenizer"}
    assert "exact BPE over data/words/02.words, data/words/03.words" in trained.stdout


def test_two_workers_with_different_results_for_one_stage_stop_the_gather_and_change_nothing(base, tmp_path):
    finished(task(base, 0, 1, ["02"], tmp_path / "a", job="7"))
    other = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", str(base), str(other))
    shutil.copyfile(other / "data/sample/train/01.jsonl.zst", other / "data/sample/train/02.jsonl.zst")  # other data
    finished(task(base, 0, 1, ["02"], other, job="8"))
    before = run(base, "git", "rev-parse", "HEAD").stdout
    result = run(base, "pile-gpt", "gather", "worker/slurm-7-0", "worker/slurm-8-0", check=False)
    assert result.returncode == 1
    assert "merging worker/slurm-8-0 into main stopped" in result.stderr and "download@02" in result.stderr
    assert run(base, "git", "rev-parse", "HEAD").stdout == before
    assert not run(base, "git", "status", "--porcelain", "--untracked-files=no").stdout.strip()


def test_a_worker_killed_half_way_and_rerun_pushes_the_same_arrays(base, tmp_path):
    finished(task(base, 0, 1, ["02"], tmp_path / "whole", job="1"))
    killed = tmp_path / "killed"
    process = task(base, 0, 1, ["02"], killed, job="2")
    partial = killed / "data/tokens/02.bin.tmp"
    deadline = time.monotonic() + 300
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the worker ended before it could be killed half-way"
    second = task(base, 0, 1, ["02"], killed, job="2")  # a second worker in the same clone is refused
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 1 and "another worker runs in" in output, output
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # DVC's stage lock still names the killed dvc; make its pid a live one, as an unreaped zombie or a
    # reused pid on a requeued node is, so that DVC alone would refuse the rerun as "busy".
    stage_lock = killed / ".dvc/tmp/rwlock"
    held = json.loads(stage_lock.read_text())
    assert held["write"], held
    for entry in held["write"].values():
        entry["pid"] = os.getpid()
    stage_lock.write_text(json.dumps(held))
    output = finished(task(base, 0, 1, ["02"], killed, job="2"))  # the same task, rerun: it finishes the job
    assert "worker slurm-2-0: done" in output
    for suffix in token_files.SUFFIXES:
        name = f"data/tokens/02{suffix}"
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert lock(killed)["pretokenize@02"] == lock(tmp_path / "whole")["pretokenize@02"]


def test_the_worker_scripts_pass_bash_and_shellcheck():
    for script in ("scripts/worker.sh", "scripts/slurm-prepare.sbatch"):
        subprocess.run(["bash", "-n", str(REPO / script)], check=True)
        checked = subprocess.run(
            [shutil.which("shellcheck", path=child_env()["PATH"]) or "shellcheck", str(REPO / script)],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stdout
