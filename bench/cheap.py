"""The cheap changes of issue 29, one at a time against the sample's defaults (params.yaml), at equal steps:
zero-initialised output projections and head, Muon's momentum warm-up, and an embedding and head learning
rate of their own. Each run is the real train stage in a scratch copy of the project (the sample's token
arrays and tokenizer, params.yaml with the run's changes), validating every 25 steps on the same windows.

    python bench/cheap.py                      # every run below, in order
    python bench/cheap.py --only baseline ...  # some of them (results merge into the file)

Reports val bits per byte at each validation (the train stage's val/bpb: 32 fixed windows), and the first
validation step at which each run reaches the baseline's 300-step val BPB. A second seed of the baseline
says how far apart runs that differ in nothing but their seed land. Writes bench/results/cheap.json;
needs data/tokens and data/tokenizer (`dvc repro pretokenize`).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, RESULTS, save
from model import first_reaching, tsv

VAL_EVERY = 25
MOMENTUM_WARMUP = {"muon_momentum_start": 0.85, "muon_momentum_warmup_steps": 60}
GROUP_LRS = {"embedding_lr": 0.012, "head_lr": 0.002}
RUNS = {
    "baseline": {},
    "baseline, seed 1338": {"train": {"seed": 1338}},
    "zero_init": {"model": {"zero_init": True}},
    "momentum warm-up": {"train": MOMENTUM_WARMUP},
    "embedding and head lr": {"train": GROUP_LRS},
    "zero_init + momentum warm-up": {"model": {"zero_init": True}, "train": MOMENTUM_WARMUP},
    "zero_init, seed 1338": {"model": {"zero_init": True}, "train": {"seed": 1338}},
}


def run(name: str, changes: dict, scratch: Path) -> dict:
    """Train one configuration in its own copy of the project; its val BPB curve and how long it took."""
    work = scratch / name.replace(" ", "_").replace(",", "").replace("+", "")
    work.mkdir(parents=True)
    for part in ("data/tokens", "data/tokenizer"):
        shutil.copytree(REPO / part, work / part)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(val_check_interval=VAL_EVERY)
    raw["train"]["wandb"]["mode"] = "disabled"
    for section, values in changes.items():
        raw[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {
        "PILE_GPT_PROGRESS": "0",
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO),  # this checkout's pipeline, not an installed one
    }
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "stages/train.py")], cwd=work, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    # DVCLive logs a validation after step s at s - 1
    curve = [(step + 1, bpb) for step, bpb in tsv(work / "metrics/train/plots/metrics/val/bpb.tsv")]
    shutil.rmtree(work)
    return {"changes": changes, "val_bpb_curve": curve, "final_val_bpb": curve[-1][1], "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(RUNS), help="run these, keep the others' earlier results")
    args = ap.parse_args()
    file = RESULTS / "cheap.json"
    results = json.loads(file.read_text())["runs"] if args.only and file.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or RUNS:
            results[name] = run(name, RUNS[name], Path(tmp))
            print(
                f"{name}: val bpb {results[name]['final_val_bpb']:.4f} ({results[name]['seconds']:.0f} s)", flush=True
            )
    base = results["baseline"]
    target = base["final_val_bpb"]
    for r in results.values():
        r["first_step_at_baseline_final_val_bpb"] = first_reaching(r["val_bpb_curve"], target)
    save("cheap", {"runs": results, "baseline_final_val_bpb": target, "val_every": VAL_EVERY})
    steps = [step for step, _ in base["val_bpb_curve"] if step % 50 == 0]
    print(f"\n| run | {' | '.join(f'step {s}' for s in steps)} | first step at {target:.4f} |")
    print("|---|" + "---|" * (len(steps) + 1))
    for name, r in results.items():
        curve = dict(r["val_bpb_curve"])
        reached = r["first_step_at_baseline_final_val_bpb"]
        cells = " | ".join(f"{curve[s]:.4f}" if s in curve else "" for s in steps)
        print(f"| {name} | {cells} | {reached if reached is not None else 'not reached'} |")


if __name__ == "__main__":
    os.nice(5)
    main()
