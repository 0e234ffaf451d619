"""Trainings for the tests: a tiny project laid out like the repository after pretokenize, and one way
to start the train stage, always on the code under test (PYTHONPATH: this checkout's, or `code`)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import torch
import yaml

from tests.helpers import REPO, child_env

HANG_S = 300  # a liveness bound: only a hang, never a slow or loaded machine, takes this long

TINY = {
    "model": {
        "block_size": 32,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "dropout": 0.0,
        "bias": False,
        "vocab_multiple": 64,
    },
    "train": {
        "batch_size": 8,
        "max_steps": 24,
        "lr": 0.003,
        "min_lr": 0.0003,
        "warmup_steps": 4,
        "decay_steps": 24,
        "val_check_interval": 8,
        "val_windows": 16,
        "checkpoint_every": 4,
        "log_every": 2,
        "num_workers": 0,
        "num_threads": 1,
        "accelerator": "cpu",
    },
}


def project(tmp_path, small_model, token_arrays, **overrides):
    """A directory laid out like the repository after pretokenize, with tiny model and training params."""
    shutil.copytree(token_arrays, tmp_path / "data/tokens")
    (tmp_path / "data/tokenizer").mkdir(parents=True)
    shutil.copy(small_model, tmp_path / "data/tokenizer/spm.model")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["shards"] = {"00": {"path": "train/00", "sha256": None}, "val": {"path": "val", "sha256": None}}
    raw["evaluate"]["splits"] = ["val"]
    raw["corpus"]["shards"] = ["00"]
    for section, values in TINY.items():
        raw[section].update(values)
    raw["train"]["wandb"]["mode"] = "disabled"
    set_params(tmp_path, raw, **overrides)
    return tmp_path


def set_params(directory, raw=None, **overrides):
    raw = raw or yaml.safe_load((directory / "params.yaml").read_text())
    for key, value in overrides.items():
        section, name = key.split("__")
        raw[section][name] = value
    (directory / "params.yaml").write_text(yaml.safe_dump(raw))


def start_training(directory, code=REPO, env=None, command=None, **popen) -> subprocess.Popen:
    """Start the train stage in `directory` (`command` before its script: a launcher such as torchrun),
    in a session of its own (so its DataLoader workers and DDP children can be killed with it), from
    the stage script and package under `code`."""
    return subprocess.Popen(
        [*(command or [sys.executable]), str(code / "stages/train.py")],
        cwd=directory,
        env={**child_env(), **(env or {}), "PYTHONPATH": str(code)},
        text=True,
        start_new_session=True,
        **popen,
    )


def train(directory, check=True, code=REPO, env=None, command=None):
    """Run the train stage in `directory` to its end; its CompletedProcess."""
    process = start_training(directory, code, env, command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(timeout=HANG_S * 2)
    finally:
        kill_session(process)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode:
        raise AssertionError(f"train failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def kill_session(process: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Send `sig` to the process and everything it started (DataLoader workers, DDP children)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    if sig == signal.SIGKILL:
        process.wait()


def checkpoint_step(last) -> int | None:
    """The step of a last.ckpt, or None while there is none (writes are whole or nothing)."""
    try:
        return int(torch.load(last, weights_only=True, map_location="cpu", mmap=True)["global_step"])
    except FileNotFoundError:
        return None


def train_until_a_checkpoint(directory, output, after: int = 0, **start) -> tuple[subprocess.Popen, object]:
    """Start the train stage and return once it has written a last.ckpt past step `after` (or ended):
    (process, last.ckpt)."""
    process = start_training(directory, stdout=output, stderr=output, **start)
    last = directory / "data/model/checkpoints/last.ckpt"
    deadline = time.monotonic() + HANG_S
    while process.poll() is None and time.monotonic() < deadline and (checkpoint_step(last) or 0) <= after:
        time.sleep(0.01)
    return process, last


def weights(directory):
    from safetensors.torch import load_file

    return load_file(directory / "data/model/model.safetensors")


def losses(directory):
    """step -> train loss, from DVCLive's plot file."""
    rows = (directory / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    return {int(step): float(value) for step, value in (row.split("\t") for row in rows)}


def val_losses(directory):
    rows = (directory / "metrics/train/plots/metrics/val/loss.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[1]) for row in rows]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


GPT2 = {
    "model__arch": "gpt2",
    "model__position": "learned",
    "model__norm": "layernorm",
    "model__mlp": "gelu",
    "model__qk_norm": False,
    "model__tie_embeddings": True,
    "train__head_lr": None,  # the head is the token embedding: embedding_lr trains it
}
MODERN = {
    "model__arch": "modern",
    "model__position": "rope",
    "model__norm": "rmsnorm",
    "model__mlp": "swiglu",
    "model__qk_norm": True,
    "model__tie_embeddings": False,
}


VARIANTS = {"gpt2+adamw": {**GPT2, "train__optimizer": "adamw"}, "modern+muon": {**MODERN, "train__optimizer": "muon"}}
LONG = {"train__max_steps": 48, "train__decay_steps": 48}


def trained(steps: int, first: int) -> str:
    """The summary's words for a run that trained from step `first` to step `steps`."""
    return f"this run trained {steps - first} (from step {first})"
