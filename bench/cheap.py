"""The cheap changes of issue 29, one at a time against the sample's defaults (params.yaml), at equal steps:
zero-initialised output projections and head, Muon's momentum warm-up, and an embedding and head learning
rate of their own. Each run is the real train stage in a scratch copy of the project (the sample's token
arrays and tokenizer, params.yaml with the run's changes), validating every 25 steps on the same windows.

    python bench/cheap.py                      # every run below, in order, at the sample's 300 steps
    python bench/cheap.py --only baseline ...  # some of them (results merge into the file)
    python bench/cheap.py --steps 100 --parallel --threads 1  # a shorter schedule, all at once: for a
                                                              # machine so busy that 300 steps take an hour

--steps scales the schedule (max_steps, decay_steps, warm-up, the momentum warm-up) to that many steps.
Reports val bits per byte at each validation (the train stage's val/bpb: 32 fixed windows), and the first
validation step at which each run reaches the baseline's final val BPB. A second seed of the baseline
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

SAMPLE_STEPS = 300  # params.yaml's max_steps and decay_steps
MOMENTUM_WARMUP_SHARE = 0.2  # modded-nanogpt: 0.85 -> 0.95 over its first 300 of ~1,400-1,750 steps
MOMENTUM_START = 0.85
GROUP_LRS = {"embedding_lr": 0.012, "head_lr": 0.002}  # 3x and 0.5x train.lr: toward modded-nanogpt's ratio


def runs(steps: int) -> dict[str, dict]:
    warm_up = {
        "muon_momentum_start": MOMENTUM_START,
        "muon_momentum_warmup_steps": round(MOMENTUM_WARMUP_SHARE * steps),
    }
    return {
        "baseline": {},
        "baseline, seed 1338": {"train": {"seed": 1338}},
        "zero_init": {"model": {"zero_init": True}},
        "momentum warm-up": {"train": warm_up},
        "embedding and head lr": {"train": GROUP_LRS},
        "all three": {"model": {"zero_init": True}, "train": warm_up | GROUP_LRS},
        # which half of the group learning rates does what, and the seed noise of the two closest
        "embedding lr only": {"train": {"embedding_lr": GROUP_LRS["embedding_lr"]}},
        "head lr only": {"train": {"head_lr": GROUP_LRS["head_lr"]}},
        "zero_init, seed 1338": {"model": {"zero_init": True}, "train": {"seed": 1338}},
        "momentum warm-up, seed 1338": {"train": warm_up | {"seed": 1338}},
        # the embedding's lr helped and the head's lower lr hurt: around them
        "embedding lr only, seed 1338": {"train": {"embedding_lr": GROUP_LRS["embedding_lr"], "seed": 1338}},
        "embedding lr 0.02": {"train": {"embedding_lr": 0.02}},
        "head lr 0.008": {"train": {"head_lr": 0.008}},
        # both helped: together
        "head lr 0.008, seed 1338": {"train": {"head_lr": 0.008, "seed": 1338}},
        "embedding lr 0.012 and head lr 0.008": {"train": {"embedding_lr": 0.012, "head_lr": 0.008}},
        "embedding lr 0.012 and head lr 0.008, seed 1338": {
            "train": {"embedding_lr": 0.012, "head_lr": 0.008, "seed": 1338}
        },
    }


def start(name: str, changes: dict, steps: int, val_every: int, threads: int, scratch: Path):
    """Start the train stage on one configuration in its own copy of the project: (process, folder, clock)."""
    work = scratch / name.replace(" ", "_").replace(",", "").replace("+", "")
    work.mkdir(parents=True)
    for part in ("data/tokens", "data/tokenizer"):
        shutil.copytree(REPO / part, work / part)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    warmup = round(raw["train"]["warmup_steps"] * steps / SAMPLE_STEPS)
    raw["train"].update(max_steps=steps, decay_steps=steps, warmup_steps=warmup, val_check_interval=val_every)
    raw["train"].update(checkpoint_every=steps, num_threads=threads)
    raw["train"]["wandb"]["mode"] = "disabled"
    for section, values in changes.items():
        raw[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {
        "PILE_GPT_PROGRESS": "0",
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO),  # this checkout's pipeline, not an installed one
    }
    command = [sys.executable, str(REPO / "stages/train.py")]
    process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return process, work, time.perf_counter()


def val_curve(rows: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(optimizer steps trained, val BPB): the first row is a fresh run's validation before training,
    and DVCLive logs the one after step s at s - 1."""
    return [(0, rows[0][1])] + [(step + 1, bpb) for step, bpb in rows[1:]]


def finish(name: str, changes: dict, process, work: Path, began: float) -> dict:
    """Wait for a run; its val BPB curve and how long it took."""
    _, stderr = process.communicate()
    if process.returncode:
        raise SystemExit(f"{name}: the train stage failed:\n{stderr.decode()[-2000:]}")
    seconds = time.perf_counter() - began
    curve = val_curve(tsv(work / "metrics/train/plots/metrics/val/bpb.tsv"))
    shutil.rmtree(work)
    return {"changes": changes, "val_bpb_curve": curve, "final_val_bpb": curve[-1][1], "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(runs(SAMPLE_STEPS)), help="run these, keep the others' results")
    ap.add_argument("--steps", type=int, default=SAMPLE_STEPS, help="the schedule's length (default: the sample's)")
    ap.add_argument("--val-every", type=int, default=25, help="validate every this many steps")
    ap.add_argument("--threads", type=int, default=2, help="train.num_threads of each run")
    ap.add_argument("--parallel", action="store_true", help="start every run at once (a busy machine)")
    args = ap.parse_args()
    name = "cheap" if args.steps == SAMPLE_STEPS else f"cheap_{args.steps}_steps"
    file = RESULTS / f"{name}.json"
    results = json.loads(file.read_text())["runs"] if args.only and file.exists() else {}
    chosen = {run: changes for run, changes in runs(args.steps).items() if not args.only or run in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        started = {}
        for run, changes in chosen.items():
            started[run] = start(run, changes, args.steps, args.val_every, args.threads, Path(tmp))
            if not args.parallel:
                results[run] = finish(run, changes, *started.pop(run))
                print(
                    f"{run}: val bpb {results[run]['final_val_bpb']:.4f} ({results[run]['seconds']:.0f} s)", flush=True
                )
        for run, begun in started.items():
            results[run] = finish(run, chosen[run], *begun)
            print(f"{run}: val bpb {results[run]['final_val_bpb']:.4f} ({results[run]['seconds']:.0f} s)", flush=True)
    base = results["baseline"]
    target = base["final_val_bpb"]
    for r in results.values():
        r["first_step_at_baseline_final_val_bpb"] = first_reaching(r["val_bpb_curve"], target)
    setup = {"steps": args.steps, "val_every": args.val_every, "threads": args.threads, "parallel": args.parallel}
    save(name, {"runs": results, "baseline_final_val_bpb": target, **setup})
    shown = [step for step, _ in base["val_bpb_curve"] if step % (2 * args.val_every) == 0 or step == args.steps]
    print(f"\n| run | {' | '.join(f'step {s}' for s in shown)} | first step at {target:.4f} |")
    print("|---|" + "---|" * (len(shown) + 1))
    for run, r in results.items():
        curve = dict(r["val_bpb_curve"])
        reached = r["first_step_at_baseline_final_val_bpb"]
        cells = " | ".join(f"{curve[s]:.4f}" if s in curve else "" for s in shown)
        print(f"| {run} | {cells} | {reached if reached is not None else 'not reached'} |")


if __name__ == "__main__":
    os.nice(5)
    main()
