"""The training loss, the old way against the new (issue 29, item 1), on this machine's CPU:

- old: GPT.forward gives logits from the padded head, sliced to the vocabulary; cross_entropy upcasts
  them to fp32 outside the compiled graph (GPTModule's training step before issue 29);
- new: GPT.forward(x, y) returns the loss, computed inside the forward (and so inside the compiled
  graph) from the head's weight without its padding rows, a chunk of tokens at a time
  (pipeline/model/loss.py).

A training step is forward, backward and the preset's optimizer step (Muon and AdamW), at the shape of
presets/pile.yaml's model scaled to two cores: fewer and narrower layers, a shorter context, a small
batch, but its 50,000-piece vocabulary, since the loss's cost is the point. fp32, as training on a CPU
runs (params.yaml). Each variant runs in a fresh process per round, the variants alternated, ROUNDS
rounds: the median step time of STEPS steps after WARMUP (compilation happens there), and the peak RSS
during those steps, the kernel's high-water mark (tracemalloc does not see torch's memory), reset
before the forward pass and again before the optimizer step, so that each has its own; beside the RSS
between steps.

    python bench/loss.py            # about 15 minutes on 2 cores, more on a busy machine
    python bench/loss.py --memory   # the eager variants' peak RSS at 8x the tokens (loss_memory.json)

Writes bench/results/loss.json and prints a table for bench/README.md.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from common import REPO, save
from torch import nn

from pipeline.config.load import load_params
from pipeline.model.gpt import GPT, GPTConfig, cross_entropy
from pipeline.training.optimizers import MuonWithAdamW

SCALED = {"n_layer": 2, "n_embd": 192, "n_head": 3, "block_size": 256}  # the preset: 12 x 768, 12 heads, 1024
BATCH = 2
STEPS, WARMUP, ROUNDS = 6, 2, 3
MEMORY_BATCH = 16  # --memory: the preset's sequences a GPU, 4096 tokens here
VARIANTS = ("old eager", "new eager", "old compiled", "new compiled")


class OldLogits(nn.Module):
    """GPT.forward as it was: the padded head's logits, sliced to the vocabulary (a copy, and a
    zero-filled copy in the backward pass)."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.hidden_states(idx))[..., : self.model.config.vocab_size]


def loss_function(model: GPT, variant: str, backend: str = "inductor"):
    """(x, y) -> the mean loss, as `variant` computes it; compiled as GPTModule.configure_model does:
    the module's forward, in place, and nothing outside it."""
    old = OldLogits(model)
    if variant.endswith("compiled"):
        (old if variant.startswith("old") else model).compile(backend=backend)
    if variant.startswith("old"):
        return lambda x, y: cross_entropy(old(x), y)
    return lambda x, y: model(x, y)


def preset() -> tuple[GPTConfig, object]:
    """presets/pile.yaml's model (and its tokenizer's vocabulary) and train sections."""
    p = load_params(REPO / "presets/pile.yaml")
    return GPTConfig(vocab_size=p.tokenizer["vocab_size"], **asdict(p.model)), p.train


def resident() -> tuple[int, int]:
    """(RSS, its high-water mark since the last reset) of this process, in bytes, as the kernel counts them."""
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) * 1024 for key in ("VmRSS", "VmHWM"))


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from the current RSS


def one_variant(variant: str, batch: int = BATCH, steps: int = STEPS, warmup: int = WARMUP) -> dict:
    config, train = preset()
    config = replace(config, **SCALED)
    torch.manual_seed(train.seed)
    model = GPT(config)
    optimizer = MuonWithAdamW(model, train)
    step_loss = loss_function(model, variant)
    x, y = torch.randint(0, config.vocab_size, (2, batch, config.block_size))

    def step() -> tuple[float, int, int]:
        """(seconds, peak RSS in the forward and backward passes, peak RSS in the optimizer step)."""
        started = time.perf_counter()
        reset_peak()
        loss = step_loss(x, y)
        loss.backward()
        passes = resident()[1]
        reset_peak()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        return time.perf_counter() - started, passes, resident()[1]

    for _ in range(warmup):
        step()
    before, _ = resident()  # weights, optimizer state, compiled code: what lives between steps
    times, passes, updates = zip(*(step() for _ in range(steps)))
    return {
        "step_s": statistics.median(times),
        "peak_rss_steps": max(passes + updates),
        "peak_rss_forward_backward": max(passes),
        "peak_rss_optimizer": max(updates),
        "rss_between_steps": before,
    }


def summarise(runs: dict[str, list[dict]], tokens: int) -> dict:
    """Each variant's medians over its rounds; each new variant against the old of its mode, round by round."""
    summary = {}
    for variant, rounds in runs.items():
        step_s = statistics.median(r["step_s"] for r in rounds)
        summary[variant] = {
            "step_s": step_s,
            "tokens_per_s": tokens / step_s,
            "peak_rss_steps_mb": statistics.median(r["peak_rss_steps"] for r in rounds) / 2**20,
            "rss_between_steps_mb": statistics.median(r["rss_between_steps"] for r in rounds) / 2**20,
            "peak_above_between_mb": statistics.median(r["peak_rss_steps"] - r["rss_between_steps"] for r in rounds)
            / 2**20,
        }
        # the phases' split came in the middle of the first recorded run: its earlier rounds lack it
        split = [r for r in rounds if "peak_rss_forward_backward" in r]
        if split:
            summary[variant]["peak_rss_forward_backward_mb"] = (
                statistics.median(r["peak_rss_forward_backward"] for r in split) / 2**20
            )
            summary[variant]["peak_rss_optimizer_mb"] = (
                statistics.median(r["peak_rss_optimizer"] for r in split) / 2**20
            )
    for mode in ("eager", "compiled"):
        old, new = runs[f"old {mode}"], runs[f"new {mode}"]
        summary[f"new {mode}"]["speedup_vs_old"] = statistics.median(
            o["step_s"] / n["step_s"] for o, n in zip(old, new)
        )
        summary[f"new {mode}"]["peak_rss_vs_old"] = statistics.median(
            n["peak_rss_steps"] / o["peak_rss_steps"] for o, n in zip(old, new)
        )
    return summary


def memory() -> None:
    """The eager variants' peak RSS at MEMORY_BATCH sequences: one step after one, not timed."""
    runs = {}
    for variant in ("old eager", "new eager"):
        command = [sys.executable, __file__, "--variant", variant, "--batch", str(MEMORY_BATCH)]
        runs[variant] = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(variant, runs[variant], flush=True)
    tokens = MEMORY_BATCH * SCALED["block_size"]
    save("loss_memory", {"shape": {**SCALED, "batch": MEMORY_BATCH, "tokens_per_step": tokens}, "runs": runs})
    print("\n| variant | peak RSS, forward and backward | optimizer step | RSS between steps |\n|---|---|---|---|")
    for variant, r in runs.items():
        print(
            f"| {variant}, {tokens:,} tokens | {r['peak_rss_forward_backward'] / 2**20:,.0f} MB | "
            f"{r['peak_rss_optimizer'] / 2**20:,.0f} MB | {r['rss_between_steps'] / 2**20:,.0f} MB |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", action="store_true", help="peak RSS only, eager, at MEMORY_BATCH (loss_memory.json)")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one measurement, in a child
    ap.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.variant:
        steps = (1, 1) if args.batch != BATCH else (STEPS, WARMUP)
        print(json.dumps(one_variant(args.variant, args.batch, *steps)))
        return
    if args.memory:
        return memory()
    config, _ = preset()
    config = replace(config, **SCALED)
    tokens = BATCH * config.block_size
    runs = {variant: [] for variant in VARIANTS}
    for round_ in range(ROUNDS):
        for variant in VARIANTS if round_ % 2 == 0 else reversed(VARIANTS):  # alternated, in both orders
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant], capture_output=True, text=True, check=True
            ).stdout
            runs[variant].append(json.loads(out.splitlines()[-1]))
            print(round_, variant, runs[variant][-1], flush=True)
        summary = summarise(runs, tokens)
        results = {
            "shape": {**SCALED, "batch": BATCH, "vocab_size": config.vocab_size, "tokens_per_step": tokens},
            "rounds_done": round_ + 1,
            "summary": summary,
            "target_compiled_speedup": {"measured": summary["new compiled"]["speedup_vs_old"], "target": 1.2},
            "rounds": runs,
        }
        save("loss", results)  # after every round: a run cut short keeps what it measured
    print("\n| variant | step | tokens/s | vs old | peak RSS in the steps | vs old | above the RSS between steps |")
    print("|---|---|---|---|---|---|---|")
    for variant, s in summary.items():
        print(
            f"| {variant} | {s['step_s'] * 1e3:.0f} ms | {s['tokens_per_s']:,.0f} | "
            f"{s.get('speedup_vs_old', 1.0):.2f}x | {s['peak_rss_steps_mb']:,.0f} MB | "
            f"{s.get('peak_rss_vs_old', 1.0):.2f}x | {s['peak_above_between_mb']:,.0f} MB |"
        )


if __name__ == "__main__":
    main()
