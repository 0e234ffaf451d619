"""The learning-rate schedules: their shapes, and which checkpoints a WSD run may continue from."""

import dataclasses
import json

import pytest
import torch

from pipeline.config.schema import TrainParams
from pipeline.training.schedule import continues_exactly, cooldown_start, lr_factor
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
