"""Training with the real Lightning Trainer on CPU: learns, resumes bit-exactly, scales out, stops safely."""

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
import yaml

from pipeline import pretokenize
from pipeline.model import GPT, GPTConfig
from pipeline.params import PretokenizeParams
from tests.helpers import REPO, SAMPLE, child_env, doc, write_shard

pytestmark = pytest.mark.slow  # the real Lightning Trainer, trainings of seconds to a minute each

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


@pytest.fixture(scope="session")
def token_arrays(small_model, tmp_path_factory):
    """The sample's test shard as training data and its val shard for validation, tokenized once."""
    out = tmp_path_factory.mktemp("tokens")
    for name, target in (("test", "00"), ("val", "val")):
        pretokenize.run(
            [SAMPLE / f"{name}.jsonl.zst"], small_model, out / f"{target}.bin", PretokenizeParams(workers=2)
        )
    return out


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


def train(directory, check=True):
    result = subprocess.run(
        [sys.executable, str(REPO / "stages/train.py")],
        cwd=directory,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode:
        raise AssertionError(f"train failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def train_until_the_first_checkpoint(directory, output) -> tuple[subprocess.Popen, object]:
    """Start the train stage and return once it has written last.ckpt (or ended): (process, last.ckpt)."""
    process = subprocess.Popen(
        [sys.executable, str(REPO / "stages/train.py")],
        cwd=directory,
        env=child_env(),
        stdout=output,
        stderr=output,
        text=True,
    )
    last = directory / "data/model/checkpoints/last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
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
}
MODERN = {
    "model__arch": "modern",
    "model__position": "rope",
    "model__norm": "rmsnorm",
    "model__mlp": "swiglu",
    "model__qk_norm": True,
    "model__tie_embeddings": False,
}


@pytest.mark.parametrize("variant", ["gpt2+adamw", "modern+muon"])
def test_loss_falls_and_the_model_is_exported(tmp_path, small_model, token_arrays, variant):
    arch, optimizer = variant.split("+")
    repo = project(
        tmp_path,
        small_model,
        token_arrays,
        train__max_steps=40,
        train__decay_steps=40,
        train__optimizer=optimizer,
        **(MODERN if arch == "modern" else GPT2),
    )
    result = train(repo)
    val = val_losses(repo)
    assert val[0] > val[-1] + 1.0, val  # step 0 against the end
    assert "== train ==" in result.stdout and "fresh" in result.stdout
    for name in ("model.safetensors", "config.json", "tokenizer.model"):
        assert (repo / "data/model" / name).exists()
    assert (repo / "data/model/checkpoints/last.ckpt").exists() and (repo / "data/model/checkpoints/best.ckpt").exists()


def test_throughput_is_logged_and_mfu_only_where_the_peak_is_known(tmp_path, small_model, token_arrays):
    """On CPU Lightning knows no peak FLOP/s, so no MFU; train.peak_flops supplies one."""
    plain = project(tmp_path / "plain", small_model, token_arrays, train__max_steps=8, train__log_every=2)
    train(plain)
    logged = json.loads((plain / "metrics/train/metrics.json").read_text())["train"]
    assert logged["tokens_per_s"] > 0 and logged["tokens"] == 8 * 8 * 32 and "mfu" not in logged
    peak = project(
        tmp_path / "peak", small_model, token_arrays, train__max_steps=8, train__log_every=2, train__peak_flops=1e12
    )
    train(peak)
    logged = json.loads((peak / "metrics/train/metrics.json").read_text())["train"]
    shape = yaml.safe_load((peak / "params.yaml").read_text())["model"]  # the variant params.yaml trains
    flops_per_token = GPT(GPTConfig(vocab_size=1000, **shape)).flops_per_token()
    assert logged["mfu"] == pytest.approx(logged["tokens_per_s"] * flops_per_token / 1e12, rel=1e-3)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_run_killed_mid_way_resumes_to_the_same_losses_and_weights(tmp_path, small_model, token_arrays, optimizer):
    longer = {"train__max_steps": 48, "train__decay_steps": 48, "train__optimizer": optimizer}
    whole = project(tmp_path / "whole", small_model, token_arrays, **longer)
    train(whole)
    killed = project(tmp_path / "killed", small_model, token_arrays, **longer)
    process, last = train_until_the_first_checkpoint(killed, output=subprocess.DEVNULL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step_at_kill = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= step_at_kill < 48, "the kill should land mid-run"
    result = train(killed)
    assert "resumed from data/model/checkpoints/last.ckpt" in result.stdout
    assert same_weights(weights(whole), weights(killed))
    logged, expected = losses(killed), losses(whole)
    assert all(logged[step] == expected[step] for step in logged)  # every logged loss is the same
    assert {step for step in expected if step >= step_at_kill} <= set(logged)  # none lost after the checkpoint


def test_a_killed_dataloader_worker_stops_training_with_a_message_and_a_rerun_resumes_exactly(
    tmp_path, small_model, token_arrays
):
    settings = {"train__max_steps": 48, "train__decay_steps": 48, "train__num_workers": 1}
    whole = project(tmp_path / "whole", small_model, token_arrays, **settings)
    train(whole)
    killed = project(tmp_path / "killed", small_model, token_arrays, **settings)
    process, last = train_until_the_first_checkpoint(killed, output=subprocess.PIPE)
    time.sleep(random.Random(5).uniform(0.0, 0.5))
    (worker,) = psutil.Process(process.pid).children()  # the one DataLoader worker (W&B is off)
    worker.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)  # no hang
    assert process.returncode == 1 and "Traceback" not in stderr, stderr
    assert "error: train: DataLoader worker" in stderr and "a DataLoader worker process died" in stderr
    assert "rerun to resume" in stderr
    step_at_kill = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= step_at_kill < 48, "the kill should land mid-run"
    result = train(killed)
    assert "resumed from data/model/checkpoints/last.ckpt" in result.stdout
    assert same_weights(weights(whole), weights(killed))


def test_raising_max_steps_continues_the_run_as_if_it_had_never_stopped(tmp_path, small_model, token_arrays):
    whole = project(tmp_path / "whole", small_model, token_arrays)
    train(whole)
    staged = project(tmp_path / "staged", small_model, token_arrays, train__max_steps=10)
    train(staged)
    set_params(staged, train__max_steps=24)
    assert "resumed" in train(staged).stdout
    assert same_weights(weights(whole), weights(staged))


def test_changing_the_learning_rate_starts_afresh_and_says_why(tmp_path, small_model, token_arrays):
    repo = project(tmp_path, small_model, token_arrays, train__max_steps=4)
    train(repo)
    set_params(repo, train__lr=0.001)
    result = train(repo)
    assert "starting afresh" in result.stdout and "train.lr" in result.stdout and "fresh," in result.stdout


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_two_process_ddp_reads_the_same_samples_as_one_process_with_twice_the_batch(
    tmp_path, small_model, token_arrays, optimizer
):
    common = {"train__max_steps": 8, "train__optimizer": optimizer}
    one = project(tmp_path / "one", small_model, token_arrays, train__batch_size=8, **common)
    two = project(
        tmp_path / "two",
        small_model,
        token_arrays,
        train__batch_size=4,
        train__devices=2,
        train__strategy="ddp",
        **common,
    )
    other_seed = project(tmp_path / "seed", small_model, token_arrays, train__batch_size=8, train__seed=7, **common)
    for repo in (one, two, other_seed):
        train(repo)
    a, b, c = weights(one), weights(two), weights(other_seed)
    # equal up to the order of float sums; torch.optim.Muon orthogonalises in bfloat16, which turns those
    # ~1e-7 differences into ~3e-3 (measured), still far below another seed's ~0.15
    tolerance = 1e-5 if optimizer == "adamw" else 1e-2
    assert all(torch.allclose(a[k], b[k], atol=tolerance) for k in a)
    assert not all(torch.allclose(a[k], c[k], atol=10 * tolerance) for k in a)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path, small_model, token_arrays, optimizer, arch
):
    """Checked at every step (a checkpoint each step) and checked only where something is written
    (log_every 5, a checkpoint every 2 steps): the same first bad step is named, nothing non-finite is saved."""
    variant = GPT2 if arch == "gpt2" else MODERN
    failed, kinds = [], []
    for checkpoint_every, log_every in ((1, 1), (2, 5)):
        repo = project(
            tmp_path / f"every{checkpoint_every}",
            small_model,
            token_arrays,
            train__lr=1e30,
            train__muon_lr=1e30,
            train__optimizer=optimizer,
            **variant,
            train__min_lr=0.0,
            train__warmup_steps=0,
            train__checkpoint_every=checkpoint_every,
            train__log_every=log_every,
            train__grad_clip=0.0,
        )
        result = train(repo, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        # the loss check names the first bad step; the weights check (a modern model's loss can stay
        # finite while its weights overflow) the report step by which it saw them
        stopped = re.search(r"error: train: the (loss|weights) became nan or inf (?:at|by) step (\d+)", result.stderr)
        assert stopped, result.stderr[-2000:]
        kinds.append(stopped.group(1))
        failed.append(int(stopped.group(2)))
        for path in (repo / "data/model/checkpoints").glob("*.ckpt"):
            checkpoint = torch.load(path, weights_only=True)
            assert checkpoint["global_step"] <= failed[-1]  # the state the failing step started from, no later
            assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
        assert not (repo / "data/model/model.safetensors").exists()
    if kinds == ["loss", "loss"]:
        assert failed[0] == failed[1]


def test_arrays_from_another_tokenizer_are_refused_before_training(tmp_path, small_model, token_arrays):
    repo = project(tmp_path, small_model, token_arrays)
    meta = repo / "data/tokens/00.json"
    meta.write_text(meta.read_text().replace('"tokenizer_sha256": "', '"tokenizer_sha256": "0'))
    result = train(repo, check=False)
    assert result.returncode == 1 and "data/tokens/00.bin: made with another tokenizer" in result.stderr


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_a_crafted_pickle_checkpoint_is_refused_without_running_it(tmp_path, small_model, token_arrays):
    repo = project(tmp_path, small_model, token_arrays, train__max_steps=4)
    train(repo)
    torch.save({"state_dict": {}, "payload": _Payload()}, repo / "data/model/checkpoints/last.ckpt")
    set_params(repo, train__max_steps=8)  # same run, more steps: it would resume from last.ckpt
    result = train(repo, check=False)
    assert result.returncode == 1 and "last.ckpt: refused" in result.stderr and "Traceback" not in result.stderr
    assert not (repo / "PWNED").exists()


def test_a_mixture_reports_each_groups_draws_and_says_when_a_small_group_wraps(tmp_path, small_model, token_arrays):
    directory = project(tmp_path, small_model, token_arrays)
    texts = [f"A short note number {i}, with a few words." for i in range(6)]
    pretokenize.run(
        [write_shard(tmp_path / "notes.jsonl.zst", [doc(t) for t in texts])],
        small_model,
        directory / "data/tokens/notes.bin",
        PretokenizeParams(workers=1),
    )
    raw = yaml.safe_load((directory / "params.yaml").read_text())
    raw["data"]["shards"]["00"]["group"] = "code"
    raw["data"]["shards"]["notes"] = {"path": "notes", "group": "notes"}
    raw["train"]["mixture"] = {"code": 3, "notes": 1}
    set_params(directory, raw)
    result = train(directory)
    samples = 24 * 8
    drawn = json.loads((directory / "metrics/train/metrics.json").read_text())["mixture"]
    assert drawn == {
        "code": {"samples": samples * 3 / 4, "tokens": samples * 3 / 4 * 32},
        "notes": {"samples": samples / 4, "tokens": samples / 4 * 32},
    }
    assert "group 'notes' drew all" in result.stderr and "its epoch 2 begins" in result.stderr
    assert "group 'code' drew all" not in result.stderr
