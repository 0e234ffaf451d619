"""The learning-rate schedules: their shapes, and which checkpoints a WSD run may continue from."""

import dataclasses
import json

import pytest
import torch

from pipeline.config.schema import ModelParams, TrainParams
from pipeline.model.gpt import GPTConfig
from pipeline.training.module import GPTModule
from pipeline.training.resume import changed, trajectory
from pipeline.training.schedule import continues_exactly, cooldown_start, lr_factor, muon_momentum
from tests.training import project, same_weights, set_params, train, trained, weights

WSD = TrainParams(lr=1.0, min_lr=0.1, warmup_steps=10, schedule="wsd", cooldown=0.2, max_steps=100)


def test_wsd_warms_up_holds_the_peak_then_cools_down_linearly_to_min_lr_at_max_steps():
    factors = [lr_factor(step, WSD) for step in range(100)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert cooldown_start(100, 0.2) == 80 and factors[10:80] == [1.0] * 70
    assert factors[80] == pytest.approx(1 - 0.9 / 20) and factors[89] == pytest.approx(0.55)
    assert factors[99] == pytest.approx(0.1)  # the last step trains at min_lr
    assert all(a > b for a, b in zip(factors[80:], factors[81:]))


def test_a_wsd_run_extended_before_its_cooldown_sees_the_learning_rates_of_the_longer_run():
    longer = dataclasses.replace(WSD, max_steps=300)
    assert [lr_factor(s, WSD) for s in range(80)] == [lr_factor(s, longer) for s in range(80)]
    assert lr_factor(80, WSD) != lr_factor(80, longer)
    assert continues_exactly(80, 100, longer) and not continues_exactly(81, 100, longer)  # 80: cooldown's first step
    # cooled down early: a run toward 300 stopped at step 60 cools down over 15 steps with max_steps 75
    shorter = dataclasses.replace(WSD, max_steps=75)
    assert cooldown_start(75, 0.2) == 60 and continues_exactly(60, 300, shorter)
    assert not continues_exactly(61, 300, shorter)
    assert continues_exactly(95, 100, WSD)  # the same horizon: any checkpoint
    cosine = dataclasses.replace(WSD, schedule="cosine", decay_steps=100)
    assert continues_exactly(95, 100, dataclasses.replace(cosine, max_steps=300))  # cosine's horizon is decay_steps


def test_muon_momentum_warms_up_linearly_from_its_start_then_holds():
    p = TrainParams(muon_momentum=0.95, muon_momentum_start=0.85, muon_momentum_warmup_steps=10)
    momenta = [muon_momentum(step, p) for step in range(30)]
    assert momenta[0] == 0.85 and momenta[5] == pytest.approx(0.90) and momenta[9] == pytest.approx(0.94)
    assert momenta[10:] == [0.95] * 20 and all(a < b for a, b in zip(momenta[:10], momenta[1:11]))
    assert muon_momentum(0, dataclasses.replace(p, muon_momentum_warmup_steps=0)) == 0.95  # no warm-up: today's


MODERN = GPTConfig(
    vocab_size=500, block_size=16, n_layer=2, n_head=2, n_embd=32, arch="modern", position="rope",
    norm="rmsnorm", mlp="swiglu", qk_norm=True, tie_embeddings=False,
)  # fmt: skip


def group_lrs(config: GPTConfig, p: TrainParams, steps: int) -> list[dict[str, float]]:
    """Each named parameter group's lr at steps 0..steps-1, from the module's own optimizer and schedule."""
    configured = GPTModule(config, p, global_batch=8).configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(steps):
        seen.append({group["name"]: group["lr"] for group in optimizer.param_groups})
        optimizer.step()
        schedule.step()
    return seen


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_each_parameter_group_trains_at_its_own_peak_times_the_schedule(optimizer):
    p = TrainParams(optimizer=optimizer, lr=0.004, muon_lr=0.01, min_lr=0.0004, warmup_steps=3, decay_steps=12)
    own = dataclasses.replace(p, embedding_lr=0.012, head_lr=0.002)
    peaks = {"embedding": 0.012, "head": 0.002, "no_decay": 0.004} | (
        {"muon": 0.01} if optimizer == "muon" else {"decay": 0.004}
    )
    for step, lrs in enumerate(group_lrs(MODERN, own, 16)):
        assert lrs == pytest.approx({name: peak * lr_factor(step, p) for name, peak in peaks.items()}), step
    today = {name: (0.01 if name == "muon" else 0.004) for name in peaks}  # null: every AdamW group at train.lr
    for step, lrs in enumerate(group_lrs(MODERN, p, 16)):
        assert lrs == pytest.approx({name: peak * lr_factor(step, p) for name, peak in today.items()}), step
    tied = dataclasses.replace(MODERN, tie_embeddings=True)  # the head is the embedding: embedding_lr
    assert group_lrs(tied, dataclasses.replace(p, embedding_lr=0.012), 4)[3]["embedding"] == 0.012


@pytest.mark.parametrize(
    "change",
    [
        {"model": {"zero_init": True}},
        {"train": {"muon_momentum_warmup_steps": 50}},
        {"train": {"muon_momentum_start": 0.8}},
        {"train": {"embedding_lr": 0.01}},
        {"train": {"head_lr": 0.001}},
    ],
)
def test_the_cheap_changes_are_in_the_trajectory_so_a_resume_with_another_value_starts_afresh(change):
    model, p = ModelParams(tie_embeddings=False), TrainParams()
    before = trajectory(model, p, 16, [], [])
    after = trajectory(
        dataclasses.replace(model, **change.get("model", {})),
        dataclasses.replace(p, **change.get("train", {})),
        16,
        [],
        [],
    )
    section, values = next(iter(change.items()))
    assert changed(before, after) == [f"{section}.{name}" for name in values]


@pytest.mark.slow
def test_muon_uses_the_warm_up_momentum_at_every_step_also_after_a_resume_mid_warm_up(
    tmp_path, small_model, token_arrays
):
    """A run stopped at step 4 of an 8-step momentum warm-up and continued to 12 used the schedule's
    momentum at every step (train/momentum/muon, logged after each step: the momentum it took); the same
    folder with another warm-up is another trajectory, and starts afresh, saying why."""
    warm_up = {"train__muon_momentum_start": 0.5, "train__muon_momentum_warmup_steps": 8}
    repo = project(tmp_path, small_model, token_arrays, train__optimizer="muon", train__max_steps=4, **warm_up)
    set_params(repo, train__log_every=1, train__checkpoint_every=2, train__val_check_interval=4)
    train(repo)
    set_params(repo, train__max_steps=12)
    result = train(repo)
    assert "resumed from data/model/checkpoints/last.ckpt at step 4" in result.stdout, result.stdout
    rows = (repo / "metrics/train/plots/metrics/train/momentum/muon.tsv").read_text().splitlines()[1:]
    used = [float(row.split("\t")[1]) for row in rows]  # in order: DVCLive numbers a resumed job's steps anew
    p = TrainParams(muon_momentum=0.95, muon_momentum_start=0.5, muon_momentum_warmup_steps=8)
    assert used == [pytest.approx(muon_momentum(step, p)) for step in range(12)]
    set_params(repo, train__max_steps=16, train__muon_momentum_warmup_steps=4)
    result = train(repo)
    assert "train.muon_momentum_warmup_steps" in result.stdout and "fresh" in result.stdout, result.stdout


def val_bpb(repo) -> dict[int, float]:
    """DVCLive step -> the validation's bits per byte (a validation after step s is logged at s - 1)."""
    rows = (repo / "metrics/train/plots/metrics/val/bpb.tsv").read_text().splitlines()[1:]
    return {int(step): float(value) for step, value in (row.split("\t") for row in rows)}


@pytest.mark.slow
def test_a_wsd_run_stops_at_its_target_cools_down_there_and_extends_from_its_stable_checkpoint_exactly(
    tmp_path, small_model, token_arrays
):
    """A wsd run toward 100 steps stops at the validation after step 16 that reaches the target (the val
    BPB a run toward 20 has there); cooled down from that checkpoint (max_steps 20, no target) it ends
    with the weights of a run trained straight toward 20; extended from its stable.ckpt (step 16) to 40,
    with those of a run trained straight toward 40. Bit for bit: CPU training is deterministic."""
    wsd = {"train__schedule": "wsd", "train__cooldown": 0.2}
    to20 = project(tmp_path / "to20", small_model, token_arrays, train__max_steps=20, **wsd)
    train(to20)
    target = val_bpb(to20)[15]  # after step 16: the last step before the cooldown of a run toward 20
    assert target < val_bpb(to20)[7]

    run = project(
        tmp_path / "run", small_model, token_arrays, train__max_steps=100, train__stop_at_val_bpb=target, **wsd
    )
    result = train(run)
    assert f"at step 16: val BPB {target:.4f} reached train.stop_at_val_bpb" in result.stdout, result.stdout
    record = json.loads((run / "data/model/checkpoints/run.json").read_text())
    assert (record["finished_at"], record["finished_val_bpb"]) == (16, pytest.approx(target))
    stable = torch.load(to20 / "data/model/checkpoints/stable.ckpt", weights_only=True)
    assert stable["global_step"] == 16
    exported = weights(run)  # the weights of the step that reached the target
    assert all(torch.equal(exported[k], stable["state_dict"][f"model.{k}"]) for k in exported)

    set_params(run, train__max_steps=20, train__stop_at_val_bpb=None)  # cool down where it stopped
    result = train(run)
    assert (
        "resumed from data/model/checkpoints/last.ckpt at step 16" in result.stdout and trained(20, 16) in result.stdout
    )
    assert same_weights(weights(to20), weights(run))

    to40 = project(tmp_path / "to40", small_model, token_arrays, train__max_steps=40, **wsd)
    train(to40)
    set_params(run, train__max_steps=40)  # last.ckpt is in the cooldown toward 20: extend from step 16
    result = train(run)
    assert "resumed from data/model/checkpoints/stable.ckpt at step 16" in result.stdout, result.stdout
    assert same_weights(weights(to40), weights(run))
