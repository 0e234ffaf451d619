"""Training on many processes with gloo on CPU: a run keeps its global batch and its data order across
jobs of other sizes, every rank starts the same way or none does, FSDP shards block by block."""

import json
import re
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO
from tests.training import (
    checkpoint_step,
    kill_session,
    project,
    set_params,
    start_training,
    train,
    train_until_a_checkpoint,
    trained,
    weights,
)

pytestmark = pytest.mark.slow  # several processes per training

TWO = {"train__devices": 2, "train__strategy": "ddp", "train__batch_size": 4, "train__record_windows": True}
ONE_PROCESS = {"train__devices": 1, "train__strategy": "auto", "train__grad_accum": 2}
ADAMW = {"train__optimizer": "adamw"}  # float-sum order is the only difference between DDP and accumulation


def windows_by_step(repo) -> dict[int, list[int]]:
    """step -> the window ids it trained, over every rank and micro-batch, from the job that trained it
    last (a killed job's steps past its checkpoint were trained again by the next)."""
    by_job: dict[int, dict[int, list[int]]] = {}
    for record in sorted((repo / "data/model/checkpoints/windows").glob("rank-*.tsv")):
        job = None
        for line in record.read_text().splitlines():
            if line.startswith("# job from step "):
                job = int(line.split()[4])
                continue
            step, ids = line.split("\t")
            by_job.setdefault(job, {}).setdefault(int(step), []).extend(map(int, ids.split(",")))
    final: dict[int, list[int]] = {}
    for job in sorted(by_job):
        final.update(by_job[job])
    return {step: sorted(ids) for step, ids in sorted(final.items())}


def val_steps(repo) -> list[int]:
    rows = (repo / "metrics/train/plots/metrics/val/loss.tsv").read_text().splitlines()[1:]
    return [int(row.split("\t")[0]) for row in rows]


def kill_past(repo, after: int) -> int:
    """Train until a checkpoint past step `after`, SIGKILL every process of the job; the checkpoint's step."""
    process, last = train_until_a_checkpoint(repo, subprocess.DEVNULL, after=after)
    kill_session(process)
    step = checkpoint_step(last)
    assert step is not None and after < step < 24, f"the kill should land mid-run, after step {after}: {step}"
    return step


def test_a_run_killed_on_two_processes_resumes_on_one_and_back_on_two_training_an_uninterrupted_runs_windows(
    tmp_path, small_model, token_arrays
):
    """2 processes x batch 4 are killed; the run resumes on 1 process (accumulating 2 micro-batches of 4)
    and is killed again; it ends on 2 processes. Every step trained the windows of an uninterrupted
    run of that global batch, by id, and the weights are that run's."""
    # uninterrupted, the same global batch on one process: the same windows each step (tested by DDP)
    reference = project(tmp_path / "whole", small_model, token_arrays, **{**TWO, **ADAMW, **ONE_PROCESS})
    train(reference)
    moved = project(tmp_path / "moved", small_model, token_arrays, **TWO, **ADAMW)
    first = kill_past(moved, 0)
    set_params(moved, train__devices=1)
    second = kill_past(moved, first)
    set_params(moved, train__devices=2)
    result = train(moved)
    assert trained(24, second) in result.stdout, result.stdout  # only the steps left
    assert "on 2 devices (was 1): grad_accum 1 keeps the global batch of 8" in result.stdout
    jobs = json.loads((moved / "data/model/checkpoints/run.json").read_text())["jobs"]
    assert [(j["from_step"], j["world_size"], j["grad_accum"]) for j in jobs] == [
        (0, 2, 1),
        (first, 1, 2),
        (second, 2, 1),
    ]
    # validations every 8 steps in every job (Lightning counts micro-batches, regrouped on each resume);
    # one due at a killed job's last checkpoint may be skipped on its resume, as Lightning resumes
    assert val_steps(reference)[1:] == [7, 15, 23] and val_steps(moved)[-1] == 23
    assert all((step + 1) % 8 == 0 for step in val_steps(moved)[1:]), val_steps(moved)
    expected = windows_by_step(reference)
    assert sorted(expected) == list(range(24)) and all(len(ids) == 8 for ids in expected.values())
    assert windows_by_step(moved) == expected
    a, b = weights(reference), weights(moved)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_a_job_whose_devices_cannot_make_the_runs_global_batch_is_refused_naming_what_would(
    tmp_path, small_model, token_arrays
):
    """A run of 8 sequences a step (4 x grad_accum 2 on one device), requeued on 3 devices: 8 does not
    split into micro-batches of 3 x 4. The job stops before any process starts, names both world sizes
    and what would work, and the run's checkpoints stay."""
    repo = project(tmp_path, small_model, token_arrays, train__batch_size=4, train__grad_accum=2, train__max_steps=4)
    train(repo)
    set_params(repo, train__max_steps=8, train__devices=3, train__strategy="ddp")
    result = train(repo, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (
        "began on 1 device with a global batch of 8 sequences (batch_size 4 x grad_accum 2 x 1 device); "
        "this job has 3 devices of batch_size 4" in result.stderr
    ), result.stderr
    assert "resume it on 1 or 2 devices with train.batch_size 4" in result.stderr
    assert checkpoint_step(repo / "data/model/checkpoints/last.ckpt") == 4  # nothing was cleared or trained


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(node_zero, node_one) -> list[subprocess.CompletedProcess]:
    """The train stage as two nodes of one job (torchrun, one process each, gloo on loopback), each in
    its own clone: what `docs/training.md` shows for a cluster."""
    port = free_port()
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    launch += ["--master-addr=127.0.0.1", f"--master-port={port}"]
    processes = [
        train_process(directory, [*launch, f"--node-rank={rank}"])
        for rank, directory in enumerate((node_zero, node_one))
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in processes]


def train_process(directory, command):
    return start_training(directory, command=command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_ranks_that_read_different_checkpoint_folders_stop_before_any_step_naming_the_rank(
    tmp_path, small_model, token_arrays
):
    """One clone per node with its own data/model: node 0's folder holds a run to continue, node 1's
    nothing; then both are empty (both would start afresh, each in its own folder). Both times every
    rank stops before a step, naming rank 1 and what it saw, and no checkpoint is written."""
    nodes = {"train__num_nodes": 2, "train__strategy": "ddp", "train__batch_size": 4}
    zero = project(tmp_path / "node0", small_model, token_arrays, train__batch_size=8, train__max_steps=4)
    train(zero)  # a run of global batch 8 that a 2-node job of batch 4 continues
    set_params(zero, train__max_steps=8, **nodes)
    one = project(tmp_path / "node1", small_model, token_arrays, train__max_steps=8, **nodes)
    results = two_nodes(zero, one)
    for result in results:
        assert result.returncode == 1, result.stderr[-3000:]
        assert "error: train: rank 1 of 2 decided otherwise than rank 0" in result.stderr, result.stderr[-3000:]
        assert (
            f"rank 1 (host {socket.gethostname()}, {one / 'data/model/checkpoints'}): fresh (no earlier run here)"
            in (result.stderr)
        )
        assert "resume from data/model/checkpoints/last.ckpt at step 4 (sample 32)" in result.stderr
    assert checkpoint_step(zero / "data/model/checkpoints/last.ckpt") == 4
    assert not (one / "data/model/checkpoints/last.ckpt").exists()

    shutil.rmtree(zero / "data/model")  # both empty: both start afresh alike, each in a folder of its own
    results = two_nodes(zero, one)
    for result in results:
        assert result.returncode == 1, result.stderr[-3000:]
        assert re.search(r"rank 1 \(host .*node1/data/model/checkpoints\) does not see the job rank 0", result.stderr)
    assert not (zero / "data/model/checkpoints/last.ckpt").exists() and not list(one.rglob("*.ckpt"))


FSDP_CHECK = """
import json, os, sys, torch, torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from pipeline.config.schema import TrainParams
from pipeline.model.gpt import GPT, GPTConfig
from pipeline.training import distributed
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
dist.init_process_group("gloo", rank=0, world_size=1)
out = {}
config = GPTConfig(vocab_size=300, block_size=16, n_layer=3, n_head=2, n_embd=32)
x, y = torch.randint(0, 300, (2, 2, 16))
torch.manual_seed(0); plain = GPT(config)
loss = plain(x, y); loss.backward()  # the training step's loss (pipeline/model/loss.py), padding dropped
for checkpointing in (False, True):
    strategy = distributed.strategy(TrainParams(strategy="fsdp", activation_checkpointing=checkpointing))
    torch.manual_seed(0); model = GPT(config)
    calls = []
    for block in model.blocks:  # the attention inside each block: a wrapper may call the block's forward directly
        block.attn.register_forward_hook(lambda *_: calls.append(1))
    if strategy._activation_checkpointing_kwargs:  # as Lightning does before it wraps
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
        apply_activation_checkpointing(model, **strategy._activation_checkpointing_kwargs)
    wrapped = FSDP(model, device_id=torch.device("cpu"), **strategy.kwargs)
    units = [m for m in wrapped.modules() if isinstance(m, FSDP)]
    loss = wrapped(x, y); loss.backward()
    with FSDP.summon_full_params(wrapped, with_grads=True):
        grads = {n.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", ""): p.grad
                 for n, p in wrapped.named_parameters()}
    same = all(torch.allclose(grads[n], p.grad, atol=1e-6) for n, p in plain.named_parameters())
    out[str(checkpointing)] = {"units": len(units), "block_forwards": len(calls), "same_grads": same}
print(json.dumps(out))
"""


def test_fsdp_shards_one_block_a_unit_and_recomputes_block_activations_when_asked():
    """The strategy the stage builds for train.strategy: fsdp, applied as Lightning applies it, with
    FSDP's CPU path and gloo (one process: the wrapping, not the sharding across devices; Lightning
    refuses FSDP on a CPU accelerator): a unit for each of the 3 blocks plus the root, the same
    gradients as the plain model, and with activation checkpointing each block's forward runs again
    in the backward pass."""
    result = subprocess.run(
        [sys.executable, "-c", FSDP_CHECK, str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["False"] == {"units": 4, "block_forwards": 3, "same_grads": True}
    assert seen["True"] == {"units": 4, "block_forwards": 6, "same_grads": True}


def test_activation_checkpointing_in_the_model_recomputes_each_block_and_leaves_the_gradients_exact():
    """Outside FSDP the model recomputes its blocks itself (GPT.checkpoint_activations): the same loss and
    gradients bit for bit, each block's forward run twice a step, and the same state-dict keys."""
    from pipeline.model.gpt import GPT, GPTConfig

    config = GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=2, n_embd=32)
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    grads, calls = {}, {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = GPT(config).train()
        model.checkpoint_activations = checkpointing
        calls[checkpointing] = []
        for block in model.blocks:
            block.attn.register_forward_hook(lambda *_, seen=calls[checkpointing]: seen.append(1))
        model(x).logsumexp(-1).mean().backward()
        grads[checkpointing] = {name: p.grad for name, p in model.named_parameters()}
    assert len(calls[False]) == 2 and len(calls[True]) == 4
    assert grads[True].keys() == grads[False].keys()
    assert all(torch.equal(grads[True][n], grads[False][n]) for n in grads[False])
