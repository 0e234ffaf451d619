"""GPT-2 + AdamW against the modern GPT + Muon, side by side on the sample: the same seed, data order
and tokens per step, each run the real train stage in a scratch copy of the project (the sample's
token arrays and tokenizer, params.yaml with the run's changes), then the evaluate stage on val.

    python bench/model.py            # the comparison: baseline 150 steps, the defaults 150 and 75
    python bench/model.py --sweep    # the small sweep around them that chose them (results: model_sweep.json)

Reports val bits per byte (the evaluate stage, whole val split), tokens/s, and the first validation
step at which each run reaches the baseline's final validation loss (the same tokenizer and windows:
loss and bits per byte rank alike). Writes bench/results/model.json; needs data/tokens (dvc repro).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import REPO, save

STEPS = 150
VAL_EVERY = 10
SCHEDULE = {"val_check_interval": VAL_EVERY, "checkpoint_every": STEPS, "log_every": 10}
BASELINE = {"model": {"arch": "gpt2"}, "train": {"optimizer": "adamw", "lr": 0.002, "head_lr": None}}
MODERN = {
    "arch": "modern",
    "position": "rope",
    "norm": "rmsnorm",
    "mlp": "swiglu",
    "qk_norm": True,
    "tie_embeddings": False,
}
SWEPT_FROM = {"model": MODERN, "train": {"optimizer": "muon", "lr": 0.004, "muon_lr": 0.02}}
SWEEP = {  # one change at a time from SWEPT_FROM
    "muon lr 0.01": {"model": MODERN, "train": {"optimizer": "muon", "lr": 0.004, "muon_lr": 0.01}},
    "muon lr 0.04": {"model": MODERN, "train": {"optimizer": "muon", "lr": 0.004, "muon_lr": 0.04}},
    "adamw lr 0.002": {"model": MODERN, "train": {"optimizer": "muon", "lr": 0.002, "muon_lr": 0.02}},
    "no qk_norm": {"model": {**MODERN, "qk_norm": False}, "train": SWEPT_FROM["train"]},
    "gpt2 + muon": {"model": {"arch": "gpt2"}, "train": {**SWEPT_FROM["train"], "head_lr": None}},
    "modern + adamw": {"model": MODERN, "train": {"optimizer": "adamw", "lr": 0.002}},
}
DEFAULTS = SWEEP["muon lr 0.01"]  # the sweep's winner: params.yaml's model and train settings


def run(name: str, changes: dict, steps: int, scratch: Path) -> dict:
    """Train and evaluate one configuration in its own copy of the project."""
    work = scratch / name.replace(" ", "_").replace("+", "")
    work.mkdir(parents=True)
    for part in ("data/tokens", "data/tokenizer"):
        shutil.copytree(REPO / part, work / part)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(SCHEDULE, max_steps=steps, decay_steps=steps, warmup_steps=max(1, steps // 10))
    raw["train"]["wandb"]["mode"] = "disabled"
    raw["evaluate"]["splits"] = ["val"]
    for section, values in changes.items():
        raw[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {"PILE_GPT_PROGRESS": "0", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    for stage in ("train", "evaluate"):
        subprocess.run(
            [sys.executable, str(REPO / f"stages/{stage}.py")], cwd=work, env=env, check=True, capture_output=True
        )
    curve = tsv(work / "metrics/train/plots/metrics/val/loss.tsv")
    rates = sorted(rate for _, rate in tsv(work / "metrics/train/plots/metrics/train/tokens_per_s.tsv"))
    evaluation = json.loads((work / "metrics/eval.json").read_text())
    shutil.rmtree(work)
    return {
        "steps": steps,
        "changes": changes,
        "val_bpb": evaluation["val"]["bpb"],
        "val_loss_curve": curve,
        "tokens_per_s": rates[len(rates) // 2],  # the median of the rates logged every 10 steps
    }


def tsv(path: Path) -> list[tuple[int, float]]:
    """(step, value) rows of a DVCLive plot file."""
    rows = path.read_text().splitlines()[1:]
    return [(int(step), float(value)) for step, value in (row.split("\t") for row in rows)]


def first_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, loss in curve if loss <= target), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sweep", action="store_true", help="the sweep that chose the defaults, instead")
    args = ap.parse_args()
    runs = {"gpt2 + adamw (baseline)": (BASELINE, STEPS)}
    if args.sweep:
        runs |= {"swept from": (SWEPT_FROM, STEPS), "swept from, 75 steps": (SWEPT_FROM, STEPS // 2)}
        runs |= {name: (changes, STEPS) for name, changes in SWEEP.items()}
    else:
        runs |= {"new defaults": (DEFAULTS, STEPS), "new defaults, 75 steps": (DEFAULTS, STEPS // 2)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (changes, steps) in runs.items():
            results[name] = run(name, changes, steps, Path(tmp))
            print(
                f"{name}: val bpb {results[name]['val_bpb']:.4f}, {results[name]['tokens_per_s']:,.0f} tokens/s",
                flush=True,
            )
    base = results["gpt2 + adamw (baseline)"]
    target = base["val_loss_curve"][-1][1]
    for r in results.values():
        r["bpb_vs_baseline"] = r["val_bpb"] / base["val_bpb"]
        r["time_per_step_vs_baseline"] = base["tokens_per_s"] / r["tokens_per_s"]
        r["first_step_at_baseline_final_val_loss"] = first_reaching(r["val_loss_curve"], target)
    save("model_sweep" if args.sweep else "model", {"runs": results, "baseline_final_val_loss": target})
    print(
        f"\n| run | steps | val bpb | vs baseline | time per step vs baseline | first step at the baseline's final val loss ({target:.3f}) |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        reached = r["first_step_at_baseline_final_val_loss"]
        print(
            f"| {name} | {r['steps']} | {r['val_bpb']:.4f} | **{r['bpb_vs_baseline']:.3f}x** | {r['time_per_step_vs_baseline']:.2f}x | {reached if reached is not None else 'not reached'} |"
        )


if __name__ == "__main__":
    main()
