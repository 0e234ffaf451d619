"""The learning-rate schedules, as factors of each parameter group's peak: pure functions of the step.

Both warm up linearly over train.warmup_steps. Then:
- `cosine` falls along a cosine to min_lr at train.decay_steps and stays there (nanoGPT's), a horizon
  fixed in params, so a run can go on at min_lr past it but never end early with a cooled-down model;
- `wsd` (warmup-stable-decay) holds the peak, then falls linearly to min_lr over the last
  train.cooldown share of train.max_steps. Up to its cooldown it does not depend on max_steps: a run
  can be extended from any checkpoint before the cooldown (a larger max_steps), or cooled down from
  any such checkpoint (a max_steps whose cooldown begins there: continues_exactly decides which
  checkpoint a job may continue from).

Muon's momentum has a warm-up of its own (muon_momentum): a low momentum while the first gradients
point anywhere, the full one after.
"""

import math

from pipeline.config.schema import TrainParams


def cooldown_start(max_steps: int, cooldown: float) -> int:
    """The first step of a WSD cooldown toward `max_steps`."""
    return max_steps - round(cooldown * max_steps)


def lr_factor(step: int, p: TrainParams) -> float:
    """The learning rate of optimizer step `step` (0-based) over each group's peak, toward p.max_steps."""
    if step < p.warmup_steps:
        return (step + 1) / (p.warmup_steps + 1)
    floor = p.min_lr / p.lr
    if p.schedule == "wsd":
        start = cooldown_start(p.max_steps, p.cooldown)
        if step < start:
            return 1.0
        done = min(1.0, (step - start + 1) / max(1, p.max_steps - start))  # 1 at the last step
        return 1.0 - (1.0 - floor) * done
    if step >= p.decay_steps:
        return floor
    progress = (step - p.warmup_steps) / max(1, p.decay_steps - p.warmup_steps)
    return (p.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (p.lr - p.min_lr)) / p.lr


def muon_momentum(step: int, p: TrainParams) -> float:
    """Muon's momentum at optimizer step `step` (0-based): muon_momentum_start at step 0, rising linearly
    to muon_momentum at muon_momentum_warmup_steps and held there."""
    if step >= p.muon_momentum_warmup_steps:
        return p.muon_momentum
    done = step / p.muon_momentum_warmup_steps
    return p.muon_momentum_start + done * (p.muon_momentum - p.muon_momentum_start)


def continues_exactly(step: int, trained_toward: int, p: TrainParams) -> bool:
    """Whether a checkpoint at `step`, trained with max_steps `trained_toward`, saw the learning rates a
    run toward p.max_steps would have: always under cosine (its horizon is decay_steps); under WSD
    when the horizons are equal or the checkpoint precedes both cooldowns."""
    if p.schedule != "wsd" or trained_toward == p.max_steps:
        return True
    return step <= min(cooldown_start(trained_toward, p.cooldown), cooldown_start(p.max_steps, p.cooldown))
