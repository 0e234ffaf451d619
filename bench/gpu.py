"""A training step on one GPU at presets/pile.yaml's 124M shape (issue 29, item 6): tokens/s, MFU and
peak memory, in bf16 autocast with the preset's optimizer (Muon and AdamW), for the old loss and the
new (bench/loss.py says what each is), eager and compiled. One prepared script, about 3 minutes on an
H100 (most of it compilation):

    python bench/gpu.py                              # writes bench/results/gpu.json
    python bench/gpu.py --toy --out /tmp/gpu.json    # a tiny shape on CPU in seconds (the suite runs it)

Each variant builds its own model and optimizer (the same seed), takes WARMUP steps (compilation
happens there), then STEPS timed steps ended by a synchronisation; ROUNDS rounds, the variants'
order reversed every other round, the median per variant. MFU is GPT.flops_per_token against the
device's dense bf16 peak (pipeline/training/throughput.py); peak memory is
torch.cuda.max_memory_allocated over the timed steps, weights and optimizer state included. The toy
mode compiles with the aot_eager backend (inductor's C++ compilation takes minutes on a CPU) and has
neither MFU nor a peak memory.
"""

import argparse
import gc
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from common import RESULTS, machine
from loss import VARIANTS, loss_function, preset

from pipeline.model.gpt import GPT
from pipeline.training.optimizers import MuonWithAdamW
from pipeline.training.throughput import device_peak_flops

FULL = {"steps": 20, "warmup": 3, "rounds": 2, "backend": "inductor"}
TOY = {"steps": 2, "warmup": 1, "rounds": 1, "backend": "aot_eager"}
TOY_SHAPE = {"n_layer": 2, "n_embd": 64, "n_head": 2, "block_size": 32, "vocab_size": 1000}  # 1000: padded


def optimizer_for(model: GPT, train, device: torch.device) -> torch.optim.Optimizer:
    """The preset's optimizer, as GPTModule.configure_optimizers builds it."""
    fused = device.type == "cuda"
    if train.optimizer == "muon":
        return MuonWithAdamW(model, train, fused=fused)
    groups = model.optimizer_groups(train.weight_decay)
    return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), fused=fused)


def measure(variant: str, config, train, batch: int, device: torch.device, mode: dict) -> dict:
    torch.manual_seed(train.seed)
    model = GPT(config).to(device)
    optimizer = optimizer_for(model, train, device)
    step_loss = loss_function(model, variant, mode["backend"])
    x, y = torch.randint(0, config.vocab_size, (2, batch, config.block_size), device=device)
    cuda = device.type == "cuda"

    def steps(n: int) -> None:
        for _ in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = step_loss(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()  # the clock must see the device's work, not its queue

    steps(mode["warmup"])
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    steps(mode["steps"])
    seconds = (time.perf_counter() - started) / mode["steps"]
    return {"step_s": seconds, "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else None}


def release(device: torch.device) -> None:
    """Whatever the last variant left: its model and optimizer, its compiled code, the allocator's cache."""
    gc.collect()
    torch._dynamo.reset()  # each variant compiles afresh (inductor's cache on disk still serves)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", action="store_true", help="a tiny shape on CPU, compiled with aot_eager")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    ap.add_argument("--rounds", type=int, help=f"rounds of the four variants (default {FULL['rounds']}; toy 1)")
    args = ap.parse_args()
    config, train = preset()
    batch = train.batch_size
    mode = TOY if args.toy else FULL
    if args.rounds:
        mode = {**mode, "rounds": args.rounds}
    if args.toy:
        device, config, batch = torch.device("cpu"), replace(config, **TOY_SHAPE), 2
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        raise SystemExit("bench/gpu.py: no GPU here (--toy runs a tiny shape on CPU)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak_flops = device_peak_flops(device, "bf16-mixed")
    flops_per_token = GPT(config).flops_per_token()
    tokens = batch * config.block_size
    runs = {variant: [] for variant in VARIANTS}
    began = time.perf_counter()
    for round_ in range(mode["rounds"]):
        for variant in VARIANTS if round_ % 2 == 0 else reversed(VARIANTS):
            runs[variant].append(measure(variant, config, train, batch, device, mode))
            release(device)
            print(f"round {round_}, {variant}: {runs[variant][-1]} ({time.perf_counter() - began:.0f} s)", flush=True)
    summary = {}
    for variant, rounds in runs.items():
        step_s = statistics.median(r["step_s"] for r in rounds)
        peak = max(r["peak_memory_bytes"] or 0 for r in rounds)
        summary[variant] = {
            "step_s": step_s,
            "tokens_per_s": tokens / step_s,
            "mfu": tokens / step_s * flops_per_token / peak_flops if peak_flops else None,
            "peak_memory_gib": peak / 2**30 if peak else None,
        }
    for mode_name in ("eager", "compiled"):
        old, new = summary[f"old {mode_name}"], summary[f"new {mode_name}"]
        new["speedup_vs_old"] = old["step_s"] / new["step_s"]
    results = {
        "device": name,
        "toy": args.toy,
        "shape": {**{k: getattr(config, k) for k in TOY_SHAPE}, "batch": batch, "tokens_per_step": tokens},
        "precision": "bf16 autocast",
        "optimizer": train.optimizer,
        "peak_flops": peak_flops,
        "flops_per_token": flops_per_token,
        "seconds": time.perf_counter() - began,
        "variants": summary,
        "rounds": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    print(f"\n{name}, {tokens:,} tokens a step, bf16 autocast, {train.optimizer}\n")
    print("| variant | tokens/s | vs old | MFU | peak memory |\n|---|---|---|---|---|")
    for variant, s in summary.items():
        mfu = f"{s['mfu']:.1%}" if s["mfu"] else "-"
        memory = f"{s['peak_memory_gib']:.1f} GiB" if s["peak_memory_gib"] else "-"
        print(f"| {variant} | {s['tokens_per_s']:,.0f} | {s.get('speedup_vs_old', 1.0):.2f}x | {mfu} | {memory} |")


if __name__ == "__main__":
    main()
