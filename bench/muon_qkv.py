"""Muon with Q, K and V orthogonalised apart (train.muon_split_qkv) against the stacked matrix, at equal
steps on the sample: params.yaml as it is (modern + Muon, 300 steps) but for the option and the seed,
each run the real train stage in a scratch copy of the project (the sample's token arrays and
tokenizer); the validation loss and bits per byte the train stage logs, step by step.

    python bench/muon_qkv.py                       # seed 1337, the two runs one after the other
    python bench/muon_qkv.py --seeds 1337 1338 --together
    python bench/muon_qkv.py --read WITHOUT WITH   # record two finished runs' folders instead

--together trains a seed's two runs at once with one torch thread each (train.num_threads 1), the
CPU of one default run: on a shared machine both then see the same load. Writes
bench/results/muon_qkv.json; needs data/tokens and data/tokenizer (dvc repro pretokenize).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import REPO, save

VARIANTS = {"stacked": False, "split": True}  # the run's name: train.muon_split_qkv


def prepare(work: Path, split: bool, seed: int, threads: int | None) -> Path:
    """A scratch project: the sample's arrays and tokenizer, params.yaml with the run's changes."""
    for part in ("data/tokens", "data/tokenizer"):
        shutil.copytree(REPO / part, work / part)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(muon_split_qkv=split, seed=seed)
    raw["train"]["wandb"]["mode"] = "disabled"
    if threads:
        raw["train"]["num_threads"] = threads
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return work


def start(work: Path) -> subprocess.Popen:
    env = {"PILE_GPT_PROGRESS": "0", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "stages/train.py")], cwd=work, env=env, stdout=subprocess.DEVNULL
    )


def tsv(path: Path) -> dict[int, float]:
    """step -> value, from a DVCLive plot file."""
    rows = path.read_text().splitlines()[1:]
    return {int(step): float(value) for step, value in (row.split("\t") for row in rows)}


def curves(work: Path) -> dict:
    plots = work / "metrics/train/plots/metrics/val"
    raw = yaml.safe_load((work / "params.yaml").read_text())["train"]
    return {
        "muon_split_qkv": raw["muon_split_qkv"],
        "seed": raw["seed"],
        "num_threads": raw["num_threads"],
        "val_loss": tsv(plots / "loss.tsv"),
        "val_bpb": tsv(plots / "bpb.tsv"),
    }


def compare(runs: dict[str, dict]) -> dict:
    """split / stacked val BPB at every validation step both logged."""
    stacked, split = runs["stacked"]["val_bpb"], runs["split"]["val_bpb"]
    return {step: split[step] / stacked[step] for step in sorted(stacked.keys() & split.keys())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--together", action="store_true", help="a seed's two runs at once, one thread each")
    ap.add_argument("--read", nargs=2, type=Path, metavar=("WITHOUT", "WITH"), help="finished runs' folders")
    args = ap.parse_args()
    results = {}
    if args.read:
        runs = {name: curves(work) for name, work in zip(VARIANTS, args.read)}
        results[f"seed {runs['stacked']['seed']}"] = runs
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in args.seeds:
                works = {
                    name: prepare(Path(tmp) / f"{name}-{seed}", split, seed, 1 if args.together else None)
                    for name, split in VARIANTS.items()
                }
                if args.together:
                    processes = [start(work) for work in works.values()]
                else:
                    processes = []
                    for work in works.values():
                        processes.append(start(work))
                        processes[-1].wait()
                if any(process.wait() for process in processes):
                    raise SystemExit(f"error: a training of seed {seed} failed")
                results[f"seed {seed}"] = {name: curves(work) for name, work in works.items()}
    for runs in results.values():
        runs["split / stacked val bpb"] = compare(runs)
    print("| run | step | val loss stacked | val loss split | val BPB stacked | val BPB split | split / stacked |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        for step, ratio in runs["split / stacked val bpb"].items():
            a, b = runs["stacked"], runs["split"]
            print(
                f"| {name} | {step} | {a['val_loss'][step]:.4f} | {b['val_loss'][step]:.4f} | "
                f"{a['val_bpb'][step]:.4f} | {b['val_bpb'][step]:.4f} | {ratio:.4f}x |"
            )
    save("muon_qkv", results)


if __name__ == "__main__":
    main()
