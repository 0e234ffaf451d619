"""Training with the real Lightning Trainer on CPU: learns, resumes bit-exactly, scales out, stops safely."""

import json
import random
import re
import shutil
import signal
import subprocess
import time

import psutil
import pytest
import torch
import yaml

from pipeline.config.schema import PretokenizeParams
from pipeline.encode import pretokenize
from pipeline.model.gpt import GPT, GPTConfig
from tests.helpers import REPO, doc, write_shard
from tests.training import (
    GPT2,
    HANG_S,
    LONG,
    MODERN,
    VARIANTS,
    kill_session,
    losses,
    project,
    same_weights,
    set_params,
    train,
    train_until_a_checkpoint,
    trained,
    val_losses,
    weights,
)

pytestmark = pytest.mark.slow  # the real Lightning Trainer, trainings of seconds to a minute each


@pytest.fixture(scope="module")
def whole(small_model, token_arrays, tmp_path_factory):
    """An uninterrupted 48-step run of each variant: what every interrupted or extended run must equal."""
    runs = {}
    for name, settings in VARIANTS.items():
        repo = project(tmp_path_factory.mktemp(name.replace("+", "-")), small_model, token_arrays, **LONG, **settings)
        runs[name] = (repo, train(repo))
    return runs


def kill_at_the_first_checkpoint(repo, output=subprocess.DEVNULL) -> tuple[subprocess.Popen, int]:
    """Start training, SIGKILL it once last.ckpt is written; return the process and the checkpoint's step."""
    process, last = train_until_a_checkpoint(repo, output)
    kill_session(process)
    step = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= step < 48, "the kill should land mid-run"
    return process, step


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_loss_falls_and_the_model_is_exported(whole, variant):
    repo, result = whole[variant]
    val = val_losses(repo)
    assert val[0] > val[-1] + 1.0, val  # step 0 against the end
    assert "== train ==" in result.stdout and "fresh" in result.stdout and trained(48, 0) in result.stdout
    for name in ("model.safetensors", "config.json", "tokenizer.model"):
        assert (repo / "data/model" / name).exists()
    assert (repo / "data/model/checkpoints/last.ckpt").exists() and (repo / "data/model/checkpoints/best.ckpt").exists()


def test_throughput_and_mfu_go_to_the_summary_never_to_tracked_files(tmp_path, small_model, token_arrays, whole):
    """Wall-clock figures differ run to run: they stay out of DVCLive's files (DVC outputs), and go to
    the summary (and W&B, whose offline runs only `wandb sync` reads). On CPU Lightning knows no peak
    FLOP/s, so no MFU; train.peak_flops supplies one."""
    plain, result = whole["modern+muon"]
    logged = json.loads((plain / "metrics/train/metrics.json").read_text())["train"]
    assert logged["tokens"] == 48 * 8 * 32 and not {"tokens_per_s", "mfu"} & set(logged)
    assert not list((plain / "metrics/train").rglob("tokens_per_s*")) and not list((plain / "metrics").rglob("mfu*"))
    assert re.search(r"throughput\s+[\d,]+ tokens/s \(no MFU", result.stdout), result.stdout
    peak = project(tmp_path, small_model, token_arrays, train__max_steps=8, train__log_every=2, train__peak_flops=1e12)
    result = train(peak)
    shape = yaml.safe_load((peak / "params.yaml").read_text())["model"]  # the variant params.yaml trains
    flops_per_token = GPT(GPTConfig(vocab_size=1000, **shape)).flops_per_token()
    shown = re.search(r"throughput\s+([\d,]+) tokens/s, MFU ([\d.]+)%", result.stdout)
    assert shown, result.stdout
    tokens_per_s, mfu = float(shown.group(1).replace(",", "")), float(shown.group(2)) / 100
    assert tokens_per_s > 0 and mfu == pytest.approx(tokens_per_s * flops_per_token / 1e12, rel=1e-2)
    assert "tokens_per_s" not in (peak / "metrics/train/metrics.json").read_text()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_run_killed_mid_way_resumes_to_the_same_losses_and_weights_training_only_the_rest(
    tmp_path, small_model, token_arrays, whole, variant
):
    reference, _ = whole[variant]
    killed = project(tmp_path, small_model, token_arrays, **LONG, **VARIANTS[variant])
    _, step_at_kill = kill_at_the_first_checkpoint(killed)
    result = train(killed)
    assert "resumed from data/model/checkpoints/last.ckpt" in result.stdout
    assert trained(48, step_at_kill) in result.stdout, result.stdout  # only the steps the kill took away
    assert same_weights(weights(reference), weights(killed))
    logged, expected = losses(killed), losses(reference)
    assert all(logged[step] == expected[step] for step in logged)  # every logged loss is the same
    assert {step for step in expected if step >= step_at_kill} <= set(logged)  # none lost after the checkpoint


def test_a_dead_worker_is_recognised_when_library_code_wraps_pytorchs_report():
    """PyTorch's SIGCHLD handler raises wherever the main thread is; inside inspect it became
    "TypeError: unsupported callable" with the report as its cause, and the stage printed a traceback."""
    from pipeline.training.train import dead_worker

    report = RuntimeError("DataLoader worker (pid 15905) is killed by signal: Killed. ")
    try:
        try:
            raise report
        except RuntimeError as exc:
            raise TypeError("unsupported callable") from exc
    except TypeError as wrapped:
        assert dead_worker(wrapped) is report
    assert dead_worker(report) is report
    assert dead_worker(TypeError("unsupported callable")) is None


def test_a_killed_dataloader_worker_stops_training_with_a_message_and_a_rerun_resumes_exactly(
    tmp_path, small_model, token_arrays, whole
):
    reference, _ = whole["modern+muon"]  # train.num_workers does not change the weights
    killed = project(tmp_path, small_model, token_arrays, **LONG, **VARIANTS["modern+muon"], train__num_workers=1)
    process, last = train_until_a_checkpoint(killed, output=subprocess.PIPE)
    time.sleep(random.Random(5).uniform(0.0, 0.5))
    (worker,) = psutil.Process(process.pid).children()  # the one DataLoader worker (W&B is off)
    worker.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=HANG_S)  # a hang, not a slow machine, would exceed this
    assert process.returncode == 1 and "Traceback" not in stderr, stderr
    assert "error: train: DataLoader worker" in stderr and "a DataLoader worker process died" in stderr
    assert "rerun to resume" in stderr
    step_at_kill = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= step_at_kill < 48, "the kill should land mid-run"
    result = train(killed)
    assert "resumed from data/model/checkpoints/last.ckpt" in result.stdout
    assert trained(48, step_at_kill) in result.stdout, result.stdout
    assert same_weights(weights(reference), weights(killed))


def test_raising_max_steps_continues_the_run_as_if_it_had_never_stopped(tmp_path, small_model, token_arrays, whole):
    reference, _ = whole["gpt2+adamw"]
    staged = project(tmp_path, small_model, token_arrays, **{**LONG, **VARIANTS["gpt2+adamw"], "train__max_steps": 20})
    assert trained(20, 0) in train(staged).stdout
    set_params(staged, train__max_steps=48)
    result = train(staged)
    assert "resumed" in result.stdout and trained(48, 20) in result.stdout, result.stdout
    assert same_weights(weights(reference), weights(staged))


def test_a_finished_run_or_one_of_other_params_is_trained_afresh_and_the_summary_says_why(
    tmp_path, small_model, token_arrays
):
    repo = project(tmp_path, small_model, token_arrays, train__max_steps=4)
    train(repo)
    first = weights(repo)
    again = train(repo)  # what `dvc repro --force train` does: it must show what this code makes, not resume
    assert "fresh (the run finished at step 4: a rerun trains it again from scratch" in again.stdout, again.stdout
    assert trained(4, 0) in again.stdout
    assert same_weights(first, weights(repo))  # CPU training is bit-reproducible run to run
    set_params(repo, train__lr=0.001)
    result = train(repo)
    assert (
        "starting afresh" in result.stdout
        and "fresh (the checkpoints belong to other params: train.lr" in result.stdout
    )
    assert trained(4, 0) in result.stdout


def test_a_checkpoint_made_by_other_training_code_is_not_continued(tmp_path, small_model, token_arrays):
    """Raising max_steps continues a run, but only under the code that made it: a change to a module
    the stage runs (here a comment in the Lightning module) starts afresh, naming the file."""
    code = tmp_path / "code"
    for part in ("pipeline", "stages"):
        shutil.copytree(REPO / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    repo = project(tmp_path / "repo", small_model, token_arrays, train__max_steps=4)
    train(repo, code=code)
    set_params(repo, train__max_steps=8)
    module = code / "pipeline/training/module.py"
    module.write_text(module.read_text() + "\n# a change to the training code\n")
    result = train(repo, code=code)
    assert "fresh (the checkpoints were made by other code: pipeline/training/module.py)" in result.stdout, (
        result.stdout
    )
    assert trained(8, 0) in result.stdout


def test_two_process_ddp_reads_the_same_samples_as_one_process_with_twice_the_batch(
    tmp_path, small_model, token_arrays
):
    """AdamW, so the two runs agree to float summation order (Muon's bfloat16 Newton-Schulz would blur
    that to ~1e-2); Muon shared across two ranks is tested on its own in tests/test_muon.py."""
    common = {"train__max_steps": 8, "train__optimizer": "adamw"}
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
    for repo in (one, two):
        train(repo)
    a, b = weights(one), weights(two)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.parametrize(("arch", "optimizer"), [("gpt2", "adamw"), ("modern", "muon")])
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path, small_model, token_arrays, optimizer, arch
):
    """A run whose one step so far (lr 1e30) left huge but finite weights, saved in last.ckpt, is
    continued; its next step overflows. Checked at every step (a checkpoint each step) and checked only
    where something is written (log_every 5, a checkpoint every 2 steps): the stop names the step, the
    good checkpoint stays byte for byte, nothing later and nothing non-finite is saved or exported."""
    variant = GPT2 if arch == "gpt2" else MODERN
    exploding = {
        "train__lr": 1e30,
        "train__muon_lr": 1e30,
        "train__optimizer": optimizer,
        "train__min_lr": 0.0,
        "train__warmup_steps": 0,
        "train__grad_clip": 0.0,
        **variant,
    }
    first = project(tmp_path / "first", small_model, token_arrays, train__max_steps=1, **exploding)
    train(first)
    good = first / "data/model/checkpoints/last.ckpt"
    assert torch.load(good, weights_only=True)["global_step"] == 1
    failed, kinds = [], []
    for checkpoint_every, log_every in ((1, 1), (2, 5)):
        repo = tmp_path / f"every{checkpoint_every}"
        shutil.copytree(first, repo)
        set_params(repo, train__max_steps=10, train__checkpoint_every=checkpoint_every, train__log_every=log_every)
        result = train(repo, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "train: resuming from data/model/checkpoints/last.ckpt at step 1" in result.stderr, result.stderr
        # the loss check names the first bad step; the weights check (a modern model's loss can stay
        # finite while its weights overflow) the report step by which it saw them
        stopped = re.search(r"error: train: the (loss|weights) became nan or inf (?:at|by) step (\d+)", result.stderr)
        assert stopped, result.stderr[-2000:]
        kinds.append(stopped.group(1))
        failed.append(int(stopped.group(2)))
        assert failed[-1] >= 1  # the continued run's first step or later
        checkpoints = sorted(path.name for path in (repo / "data/model/checkpoints").glob("*.ckpt"))
        assert checkpoints == ["last.ckpt"], checkpoints  # the good one, and no other
        assert (repo / "data/model/checkpoints/last.ckpt").read_bytes() == good.read_bytes()
        state = torch.load(repo / "data/model/checkpoints/last.ckpt", weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values())
        exported = repo / "data/model/model.safetensors"
        assert exported.read_bytes() == (first / "data/model/model.safetensors").read_bytes()  # nothing new
    if kinds == ["loss", "loss"]:
        assert failed[0] == failed[1]  # the first bad step, however rarely it is checked
    else:
        assert failed[0] <= failed[1]  # seen no later when checked at every step


def test_arrays_from_another_tokenizer_or_no_tokenizer_are_refused_before_training(tmp_path, small_model, token_arrays):
    repo = project(tmp_path, small_model, token_arrays)
    meta = repo / "data/tokens/00.json"
    meta.write_text(meta.read_text().replace('"tokenizer_sha256": "', '"tokenizer_sha256": "0'))
    result = train(repo, check=False)
    assert result.returncode == 1 and "data/tokens/00.bin: made with another tokenizer" in result.stderr
    (repo / "data/tokenizer/spm.model").unlink()
    result = train(repo, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: data/tokenizer/spm.model: missing; run `dvc repro tokenizer`" in result.stderr


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
