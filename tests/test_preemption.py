"""Preemption on SLURM, with SLURM's environment set as srun sets it and a real training signalled:
the job ends in a checkpoint in the run's folder, is requeued, and the next job resumes through the
same checks; no checkpoint outside that folder is ever loaded."""

import json
import shutil
import signal
import stat
import subprocess

import pytest
import torch

from tests.training import (
    checkpoint_step,
    project,
    same_weights,
    set_params,
    train,
    train_until_a_checkpoint,
    trained,
    weights,
)

pytestmark = pytest.mark.slow  # real trainings

SLURM = {  # one task of job 4242, as srun starts it
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_JOB_NAME": "pile-gpt",
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}
LONG = {"train__max_steps": 48, "train__decay_steps": 48}


@pytest.fixture
def slurm(tmp_path):
    """SLURM's environment, with an `scontrol` first on PATH that records what it is asked (this
    machine has no SLURM controller to requeue anything)."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    from tests.helpers import child_env

    return {**SLURM, "PATH": f"{bin_dir}:{child_env()['PATH']}"}, tmp_path / "scontrol.log"


def test_sigusr1_on_slurm_checkpoints_in_the_runs_folder_requeues_and_the_next_job_resumes_to_the_same_weights(
    tmp_path, small_model, token_arrays, slurm
):
    env, requests = slurm
    whole = project(tmp_path / "whole", small_model, token_arrays, **LONG)
    train(whole)
    repo = project(tmp_path / "repo", small_model, token_arrays, **LONG)
    process, last = train_until_a_checkpoint(repo, subprocess.PIPE, env=env)
    process.send_signal(signal.SIGUSR1)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 75, stderr[-2000:]  # EX_TEMPFAIL: stopped on purpose, to run again
    stopped = json.loads((repo / "data/model/checkpoints/run.json").read_text())["jobs"][-1]
    step = stopped["at_step"]
    assert stopped["ended"] == f"preempted: SIGUSR1 at step {step}"
    assert f"stopped: train: SIGUSR1 at step {step}: saved data/model/checkpoints/last.ckpt" in stderr
    assert "requeued SLURM job 4242" in stderr and "Traceback" not in stderr
    assert requests.read_text() == "requeue 4242\n"
    assert step % 2 == 0 and 0 < step < 48  # a report step (log_every 2), mid-run
    assert checkpoint_step(last) == step  # saved at the signal's step, not only at the last checkpoint_every
    assert not list(tmp_path.rglob("hpc_ckpt_*")) and not (repo / "data/model/model.safetensors").exists()

    result = train(repo, env=env)  # the requeued job
    assert f"resumed from data/model/checkpoints/last.ckpt at step {step}" in result.stdout, result.stdout
    assert trained(48, step) in result.stdout
    assert same_weights(weights(whole), weights(repo))
    assert requests.read_text() == "requeue 4242\n"  # a job that finishes asks for nothing


def test_no_checkpoint_outside_the_runs_folder_is_ever_loaded_and_lightnings_own_is_refused(
    tmp_path, small_model, token_arrays, slurm
):
    """A Lightning SLURM checkpoint of another run where Lightning looks for one by itself (data/model, the
    trainer's old root) changes nothing: a fresh run trains from scratch to the weights it always does.
    One inside the run's folder is refused by name, before anything is written."""
    env, _ = slurm
    plain = project(tmp_path / "plain", small_model, token_arrays, train__max_steps=8)
    train(plain)
    other = project(tmp_path / "other", small_model, token_arrays, train__max_steps=8, train__seed=7)
    train(other)
    foreign = other / "data/model/checkpoints/last.ckpt"
    assert torch.load(foreign, weights_only=True)["global_step"] == 8

    repo = project(tmp_path / "repo", small_model, token_arrays, train__max_steps=8)
    (repo / "data/model").mkdir(parents=True)
    shutil.copy(foreign, repo / "data/model/hpc_ckpt_1.ckpt")
    result = train(repo, env=env)
    assert "fresh (no earlier run here)" in result.stdout and trained(8, 0) in result.stdout
    assert same_weights(weights(plain), weights(repo))

    shutil.copy(foreign, repo / "data/model/checkpoints/hpc_ckpt_2.ckpt")
    set_params(repo, train__max_steps=12)
    before = (repo / "data/model/checkpoints/last.ckpt").read_bytes()
    result = train(repo, check=False, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data/model/checkpoints/hpc_ckpt_2.ckpt: a checkpoint of Lightning's own SLURM handling" in result.stderr
    assert (repo / "data/model/checkpoints/last.ckpt").read_bytes() == before
