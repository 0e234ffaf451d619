"""How long a checkpoint blocks training: the train stage's checkpoint writer (whole-or-nothing files in
a background thread) against the same writer on the training thread, side by side.

The model is the preset's 124M shape (presets/pile.yaml: 12 layers, 768 wide, a 50,304-row padded
vocabulary, Muon with AdamW), so `last.ckpt` holds what it holds on a GPU run: the weights, Muon's
momentum and AdamW's two moments. Each run is the real Lightning Trainer with the stage's
GPTModule and checkpoint callback, on random tokens (what is written does not depend on them), with
short sequences so a step is cheap on a CPU: the checkpoint's cost is the same at any sequence length.

    python bench/checkpoints.py      # writes bench/results/checkpoints.json, prints a table row per writer

For each writer: the median step without a checkpoint, the median step that writes one (from the
batch that ends the step to the next batch), their difference (what the checkpoint blocks), and the
checkpoint's size. The writers alternate over rounds, since this machine's speed drifts.
"""

import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from common import save
from torch.utils.data import DataLoader

from pipeline.config.schema import ModelParams, TrainParams
from pipeline.model.gpt import GPTConfig
from pipeline.training.checkpoints import AtomicCheckpointIO, BackgroundCheckpointIO, checkpoint_callbacks
from pipeline.training.module import GPTModule

STEPS, EVERY, ROUNDS, TOKENS = 13, 4, 2, 32
SHAPE = ModelParams(block_size=1024, n_layer=12, n_head=12, n_embd=768)  # presets/pile.yaml's model


class StepClock(pl.Callback):
    """Seconds from each step's last batch to the next one's, split by whether a checkpoint was written."""

    def __init__(self, every: int):
        self.every, self.last, self.plain, self.saving = every, None, [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        now = time.perf_counter()
        if self.last is not None:
            (self.saving if trainer.global_step % self.every == 0 else self.plain).append(now - self.last)
        self.last = now


def run(writer, directory: Path) -> dict:
    t = TrainParams(optimizer="muon", batch_size=1, max_steps=STEPS, checkpoint_every=EVERY, lr=6e-4, muon_lr=0.02)
    config = GPTConfig(vocab_size=50_000, **SHAPE.__dict__)
    tokens = torch.randint(0, 50_000, (STEPS, 1, TOKENS + 1), generator=torch.Generator().manual_seed(0))
    batches = [(row[:, :-1], row[:, 1:]) for row in tokens]
    clock = StepClock(EVERY)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=STEPS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        plugins=[writer],
        callbacks=[clock, checkpoint_callbacks(t, directory)[0]],
    )
    trainer.fit(GPTModule(config, t, global_batch=1), train_dataloaders=DataLoader(batches, batch_size=None))
    size = (directory / "last.ckpt").stat().st_size
    return {"plain_s": statistics.median(clock.plain), "saving_s": statistics.median(clock.saving), "bytes": size}


def main() -> None:
    torch.manual_seed(0)
    rounds: dict[str, list[dict]] = {"synchronous": [], "background": []}
    for _ in range(ROUNDS):
        for name, make in (("synchronous", AtomicCheckpointIO), ("background", BackgroundCheckpointIO)):
            with tempfile.TemporaryDirectory() as directory:
                rounds[name].append(run(make(), Path(directory)))
    results = {}
    for name, runs in rounds.items():
        plain = statistics.median(r["plain_s"] for r in runs)
        saving = statistics.median(r["saving_s"] for r in runs)
        results[name] = {"step_s": plain, "checkpoint_step_s": saving, "blocked_s": saving - plain}
    results["checkpoint_bytes"] = rounds["background"][0]["bytes"]
    results["blocked_ratio"] = results["background"]["blocked_s"] / results["synchronous"]["blocked_s"]
    results["shape"] = "124M (12 x 768, 50,304 padded vocabulary), Muon + AdamW state"
    save("checkpoints", results)
    size = results["checkpoint_bytes"] / 1e9
    for name in ("synchronous", "background"):
        r = results[name]
        print(
            f"| {name} | {r['step_s']:.2f} s | {r['checkpoint_step_s']:.2f} s | **{r['blocked_s']:.2f} s** "
            f"| {size:.2f} GB |"
        )
    print(f"background / synchronous blocking: {results['blocked_ratio']:.2f}x")


if __name__ == "__main__":
    main()
