"""The original setup at its own scale, measured: `dvc repro` of presets/pile.yaml on Pile-like shards.

The Pile cannot be reached from here, so bench/pile_like.py writes two shards (`train/11`,
`train/22`, the original tokenizer's) into a local mirror, and a fresh copy of this repository
runs the original setup on them through DVC, one stage at a time, as presets/pile.yaml sets it:
`corpus.max_lines` 1e8 over the two shards, 50,000 pieces, the exact trainer, the original flags;
then `pretokenize@11`. For every stage it records:

- wall time, and CPU time (user + sys of the whole process tree: os.wait4 on `dvc`, which waits
  for the stage, which waits for its workers), and the load average while it ran (the machine is
  shared: CPU time and the ratios hold better than wall time);
- peak RSS of the process tree, the sum of every process's RSS, polled every POLL_S (shared pages
  of forked workers count once per process, so this errs high), and the largest single process;
- peak disk use of the copy (outputs, temporaries, DVC's cache; every inode once, allocated blocks),
  polled every DISK_POLL_S, and the free space left on the filesystem;
- each output's size and whether DVC's cache holds it as a link (no second copy);
- the stage's own stats file.

The mirror stands in for the network: each shard is generated, downloaded (the download stage
copies a local mirror's file) and then deleted from the mirror, as a user's disk holds no mirror.
Before starting, the disk plan is checked against the free space, leaving RESERVE_GB for others;
scale.py refuses, with the numbers, a plan the disk cannot hold.

    python bench/scale.py plan                        # the plan for the largest shards the disk holds
    python bench/scale.py run --name small --gb 5     # one size (text a shard, GB)
    python bench/scale.py all                         # a quarter size, then the largest: the 4x comparison
    python bench/scale.py workers --gb 0.4            # words and pretokenize: 1 worker against 2, side by side
    python bench/scale.py report                      # the targets, from bench/results/scale.json
    python bench/scale.py report --pair quarter small-third  # the same between two other runs
    python bench/scale.py corpus-peak A.jsonl.zst B.jsonl.zst   # the corpus build's exact peak on each

Everything lives under --work (default /work/scale, outside git); results go to
bench/results/scale.json, written after every stage. Hours on 2 cores: run it detached and niced,
`setsid nohup nice -n 19 python bench/scale.py all > /work/scale/all.log 2>&1 &`. Not part of CI.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml
from common import REPO, RESULTS, machine

sys.path.insert(0, str(REPO / "bench"))
import pile_like  # noqa: E402

RESULT_FILE = RESULTS / "scale.json"
SHARDS = ("11", "22")  # corpus.shards of presets/pile.yaml
PRETOKENIZED = "11"
POLL_S = 0.5
DISK_POLL_S = 2.0
RESERVE_GB = 12.0  # left free for the others on this machine, at the plan's peak
MARGIN = 1.15  # on the plan's estimates
MAX_LINES = 100_000_000
TOKEN_BYTES = 3.5  # text bytes a token, planned low (more tokens, more disk) for a 50k vocabulary
WORDS_GB = 4.0  # word tables and their spilled runs, planned high
SHARED = (
    "The machine is shared: 2 cores and 24 GiB with three other engineers running tests; wall times are "
    "inflated by their work, so CPU times (user + sys of the process tree) and load averages are recorded "
    "beside them."
)


def stage_order() -> list[str]:
    return (
        [f"corpus@{k}" for k in SHARDS]
        + ["word-rules"]
        + [f"words@{k}" for k in SHARDS]
        + ["tokenizer", f"pretokenize@{PRETOKENIZED}"]
    )


def outputs(stage: str) -> list[str]:
    """The stage's outputs (dvc.yaml), as paths in the copy."""
    name, _, key = stage.partition("@")
    return {
        "download": [f"data/raw/{key}/train/{key}.jsonl.zst", f"stats/download/{key}.json"],
        "corpus": [f"data/corpus/{key}.txt", f"stats/corpus/{key}.json"],
        "word-rules": ["data/words/rules.json"],
        "words": [f"data/words/{key}.words", f"stats/words/{key}.json"],
        "tokenizer": ["data/tokenizer/spm.model", "data/tokenizer/spm.vocab", "stats/tokenizer.json"],
        "pretokenize": [f"data/tokens/{key}.bin", f"data/tokens/{key}.idx", f"data/tokens/{key}.json"],
    }[name]


# ---------------------------------------------------------------------------------------------- the plan


def text_facts() -> dict:
    """The generator's text, from one chunk: compressed bytes and lines (non-empty, as the corpus
    stage keeps them) per byte of text."""
    frame, docs, text_bytes, _ = pile_like._chunk((0, 0, 3))
    import zstandard

    lines = 0
    for line in zstandard.ZstdDecompressor().decompressobj().decompress(frame).split(b"\n"):
        if line:
            text = json.loads(line)["text"]
            lines += sum(1 for part in text.split("\n") if part)
    return {"compressed_per_text_byte": len(frame) / text_bytes, "text_bytes_per_line": text_bytes / lines}


def plan(shard_gb: float, facts: dict) -> dict:
    """Peak disk of a run with shards of `shard_gb` GB of text, in GB, with its parts."""
    c, per_line = facts["compressed_per_text_byte"], facts["text_bytes_per_line"]
    shard = shard_gb * c  # compressed
    lines = 2 * shard_gb * 1e9 / per_line
    corpus = min(lines, MAX_LINES) * per_line / 1e9
    tokens = 2 * shard_gb / TOKEN_BYTES
    downloads = 3 * shard  # the first shard's copy, the second's mirror file and its copy
    pipeline = 2 * shard + corpus + WORDS_GB + tokens
    return {
        "shard_text_gb": round(shard_gb, 2),
        "shard_compressed_gb": round(shard, 2),
        "corpus_text_gb": round(corpus, 2),
        "corpus_lines": int(min(lines, MAX_LINES)),
        "word_tables_and_runs_gb": WORDS_GB,
        "tokens_gb": round(tokens, 2),
        "peak_while_downloading_gb": round(downloads, 2),
        "peak_after_gb": round(pipeline, 2),
        "peak_gb_with_margin": round(max(downloads, pipeline) * MARGIN, 2),
    }


def largest_fitting(free_gb: float, facts: dict, cap_gb: float) -> float:
    fits = [
        gb / 2
        for gb in range(2, int(2 * cap_gb) + 1)
        if plan(gb / 2, facts)["peak_gb_with_margin"] <= free_gb - RESERVE_GB
    ]
    return max(fits, default=0.0)


def check_disk(work: Path, planned: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free / 1e9
    if planned["peak_gb_with_margin"] > free - RESERVE_GB:
        raise SystemExit(
            f"error: the plan needs {planned['peak_gb_with_margin']:.1f} GB at its peak (with a {MARGIN:.2f}x margin: "
            f"{json.dumps(planned)}), but {work} has {free:.1f} GB free and {RESERVE_GB:.0f} GB must stay free for "
            f"others; lower --gb"
        )


# ------------------------------------------------------------------------------------------ measuring


def allocated(root: Path) -> int:
    """Bytes allocated under root, every inode once (DVC's cache links count once)."""
    seen, total = set(), 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


class Watch:
    """Polls a process tree (RSS, load) and a folder (disk) until stopped."""

    def __init__(self, pid: int, root: Path):
        self.pid, self.root = pid, root
        self.peak_rss = self.peak_single = 0
        self.peak_disk = self.disk_start = allocated(root)
        self.min_free = shutil.disk_usage(root).free
        self.loads: list[float] = []
        self.cpu: dict[int, tuple[int, float]] = {}  # pid: (depth in the tree, CPU seconds last seen)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last_disk = 0.0
        while not self.stop.is_set():
            try:
                tree = psutil.Process(self.pid)
                procs = [tree] + tree.children(recursive=True)
                sizes, depth = [], {self.pid: 0}
                for p in procs:
                    try:
                        sizes.append(p.memory_info().rss)
                        depth.setdefault(p.pid, depth.get(p.ppid(), 0) + 1)
                        times = p.cpu_times()
                        self.cpu[p.pid] = (depth[p.pid], times.user + times.system)
                    except psutil.Error:
                        pass
                self.peak_rss = max(self.peak_rss, sum(sizes))
                self.peak_single = max(self.peak_single, max(sizes, default=0))
            except psutil.Error:
                pass
            self.loads.append(os.getloadavg()[0])
            if time.monotonic() - last_disk >= DISK_POLL_S:
                last_disk = time.monotonic()
                self.peak_disk = max(self.peak_disk, allocated(self.root))
                self.min_free = min(self.min_free, shutil.disk_usage(self.root).free)
            self.stop.wait(POLL_S)

    def finish(self) -> dict:
        self.stop.set()
        self.thread.join()
        self.peak_disk = max(self.peak_disk, allocated(self.root))
        return {
            "peak_rss_tree_mb": round(self.peak_rss / 1e6),
            "peak_rss_one_process_mb": round(self.peak_single / 1e6),
            "disk_at_start_gb": round(self.disk_start / 1e9, 3),
            "peak_disk_gb": round(self.peak_disk / 1e9, 3),
            "min_free_disk_gb": round(self.min_free / 1e9, 1),
            "load_average_mean": round(sum(self.loads) / max(len(self.loads), 1), 2),
            "load_average_max": round(max(self.loads, default=0.0), 2),
            # CPU seconds by depth in the tree, as last polled (a process's last POLL_S are missed):
            # under dvc, 1 is the stage's own process and 2 its workers; run directly, 0 and 1
            "cpu_s_by_depth_polled": {
                str(d): round(sum(c for depth, c in self.cpu.values() if depth == d), 1)
                for d in sorted({depth for depth, _ in self.cpu.values()})
            },
        }


def measured(command: list[str], cwd: Path, env: dict, log: Path, disk_root: Path) -> dict:
    """Run a command; wall and CPU time of its tree, peaks, load; raise on failure (the log's tail)."""
    started = time.monotonic()
    with open(log, "w") as out:
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        watch = Watch(child.pid, disk_root)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    figures = {
        "wall_s": round(time.monotonic() - started, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "cpu_user_s": round(usage.ru_utime, 1),
        "cpu_sys_s": round(usage.ru_stime, 1),
        # wait4's ru_maxrss: the largest process of the tree (every one waited for), exact where the
        # polled figures miss a peak shorter than POLL_S (one large document's)
        "peak_rss_one_process_exact_mb": round(usage.ru_maxrss * 1024 / 1e6),
        **watch.finish(),
    }
    if child.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}); {log}:\n{tail}")
    return figures


def sizes(repo: Path, paths: list[str]) -> dict:
    out = {}
    for name in paths:
        path = repo / name
        if path.exists():
            st = path.stat()
            out[name] = {"bytes": st.st_size, "linked_to_cache": st.st_nlink > 1}
    return out


# ------------------------------------------------------------------------------------------- the run


def pinned_copy(destination: Path, commit: str) -> Path:
    """The repository at `commit` as a new git repository: every size runs the same code, whatever the
    working tree holds meanwhile."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    for name in ("dvc.lock",):
        (destination / name).unlink(missing_ok=True)
    shutil.rmtree(destination / "metrics", ignore_errors=True)
    identity = ["-c", "user.name=scale", "-c", "user.email=scale@localhost"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", f"pile-gpt at {commit}"]):
        subprocess.run(["git", *command], cwd=destination, check=True)
    return destination


def write_params(repo: Path, mirror: Path, sha: dict[str, str], edit=None) -> None:
    """presets/pile.yaml with the mirror as data.source and the generated shards, checksums filled in."""
    raw = yaml.safe_load((REPO / "presets" / "pile.yaml").read_text())
    raw["data"]["source"] = str(mirror)
    raw["data"]["shards"] = {key: {"path": f"train/{key}", "sha256": sha.get(key)} for key in SHARDS}
    # the splits params require; never run here (only the stages named run)
    raw["data"]["shards"].update(val={"path": "val", "sha256": None}, test={"path": "test", "sha256": None})
    if edit:
        edit(raw)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


def env_for(repo: Path, work: Path) -> dict:
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(repo),  # the copy's code, not the editable install's (which may change meanwhile)
        "PILE_GPT_PROGRESS": "0",
        "TMPDIR": str(tmp),  # temporaries count in the copy's disk use (tmp is inside it)
    }


def save(name: str, run: dict) -> None:
    results = json.loads(RESULT_FILE.read_text()) if RESULT_FILE.exists() else {}
    results.pop("machine", None)
    results["note"] = SHARED
    results.setdefault("runs", {})[name] = run
    RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULT_FILE.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")


def sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def run(name: str, shard_gb: float, work: Path, workers: int, commit: str, keep: bool = False) -> dict:
    """One size, end to end; the results saved after every stage."""
    facts = text_facts()
    planned = plan(shard_gb, facts)
    check_disk(work, planned)
    base = work / name
    shutil.rmtree(base, ignore_errors=True)
    mirror, logs = base / "mirror", base / "logs"
    logs.mkdir(parents=True)
    repo = pinned_copy(base / "repo", commit)
    env = env_for(repo, repo)
    result = {
        "commit": commit,
        "shard_text_gb": shard_gb,
        "plan": planned,
        "generator_text": facts,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "free_disk_at_start_gb": round(shutil.disk_usage(work).free / 1e9, 1),
        "generation": {},
        "stages": {},
    }
    print(f"{name}: {shard_gb} GB of text a shard; plan {json.dumps(planned)}", flush=True)
    sha: dict[str, str] = {}
    for key in SHARDS:  # generate, download, delete from the mirror: a user's disk holds no mirror
        path = mirror / "train" / f"{key}.jsonl.zst"
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        made = pile_like.write(path, int(shard_gb * 1e9), int(key), workers)
        sha[key] = sha256(path)
        made.update(seconds=round(time.monotonic() - started, 1), sha256=sha[key])
        result["generation"][key] = made
        print(f"{name}: generated {json.dumps(made)}", flush=True)
        write_params(repo, mirror, sha)
        stage(repo, env, logs, f"download@{key}", result)
        path.unlink()
        save(name, result)
    for step in stage_order():
        stage(repo, env, logs, step, result)
        save(name, result)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    result["disk_at_end_gb"] = round(allocated(repo) / 1e9, 2)
    result["dvc_cache_gb"] = round(allocated(repo / ".dvc" / "cache") / 1e9, 2)
    save(name, result)
    if not keep:
        shutil.rmtree(base)
    return result


def stage(repo: Path, env: dict, logs: Path, step: str, result: dict) -> None:
    print(f"{time.strftime('%H:%M:%S')} {step} ...", flush=True)
    figures = measured(["dvc", "repro", "--single-item", step], repo, env, logs / f"{step}.log", repo)
    figures["outputs"] = sizes(repo, outputs(step))
    stats = next((repo / p for p in outputs(step) if p.endswith(".json") and (repo / p).exists()), None)
    if stats is not None:
        figures["stats"] = json.loads(stats.read_text())
    if step == "tokenizer" and (repo / "metrics/tokenizer.json").exists():
        figures["metrics"] = json.loads((repo / "metrics/tokenizer.json").read_text())
    result["stages"][step] = figures
    print(
        f"{time.strftime('%H:%M:%S')} {step}: {json.dumps({k: v for k, v in figures.items() if k != 'stats'})}",
        flush=True,
    )


# ------------------------------------------------------------------------------- the corpus stage's peak
CORPUS_BUILD = """
import sys
from pathlib import Path
from pipeline.tokenizer.corpus import build
stats = build([Path(sys.argv[1])], Path(sys.argv[2]), 50_000_000, "0:11", 4192)
print(stats.docs)
"""


def corpus_peak(paths: list[Path], work: Path, commit: str) -> dict:
    """The corpus stage's build (presets/pile.yaml: a 5e7-line quota, 4,192-byte lines) on each file,
    its exact peak RSS from wait4: a document is held for less than POLL_S, so the polled peaks of a
    run are a sample. Give a shard and its shorter versions (pile_like.py's first chunks, e.g.
    `zstd -dc 11.jsonl.zst | head -n DOCS | zstd -3 -o 11-short.jsonl.zst`) to see it against size."""
    results = json.loads(RESULT_FILE.read_text()) if RESULT_FILE.exists() else {}
    rows = []
    for path in paths:
        out = work / f"corpus-peak-{path.name}.txt"
        figures = measured(
            [sys.executable, "-c", CORPUS_BUILD, str(path), str(out)],
            REPO,
            dict(os.environ),
            work / f"{out.name}.log",
            work,
        )
        out.unlink()
        rows.append({"file": str(path), "bytes": path.stat().st_size, **{k: figures[k] for k in ("wall_s", "peak_rss_one_process_exact_mb", "peak_rss_one_process_mb")}})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    results["corpus_peak"] = {"commit": commit, "rows": rows}
    RESULT_FILE.write_text(json.dumps(results, indent=2) + "\n")
    return results["corpus_peak"]


# --------------------------------------------------------------------------------------- 1 vs 2 workers


def workers_check(shard_gb: float, work: Path, rounds: int, commit: str) -> dict:
    """words@11 and pretokenize@11 with 1 worker and with 2, alternated, on one modest shard."""
    base = work / "workers"
    shutil.rmtree(base, ignore_errors=True)
    mirror, logs = base / "mirror", base / "logs"
    logs.mkdir(parents=True)
    repo = pinned_copy(base / "repo", commit)
    env = env_for(repo, repo)
    path = mirror / "train" / "11.jsonl.zst"
    path.parent.mkdir(parents=True)
    made = pile_like.write(path, int(shard_gb * 1e9), 11, 2)
    sha = {"11": sha256(path)}

    def only_11(raw: dict) -> None:
        raw["corpus"]["shards"] = ["11"]
        raw["data"]["shards"] = {key: raw["data"]["shards"][key] for key in ("11", "val", "test")}

    write_params(repo, mirror, sha, only_11)
    for step in ("download@11", "corpus@11", "word-rules", "words@11", "tokenizer"):
        subprocess.run(["dvc", "repro", "--single-item", step], cwd=repo, env=env, check=True, capture_output=True)
    result = {"commit": commit, "shard": made, "rounds": [], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    commands = {"words": ["python", "stages/words.py", "11"], "pretokenize": ["python", "stages/pretokenize.py", "11"]}
    for r in range(rounds):
        for n in (1, 2) if r % 2 == 0 else (2, 1):

            def set_workers(raw: dict, n=n) -> None:
                only_11(raw)
                raw["tokenizer"]["num_threads"] = n
                raw["pretokenize"]["workers"] = n

            write_params(repo, mirror, sha, set_workers)
            for what, command in commands.items():
                figures = measured(command, repo, env, logs / f"{what}-{n}-{r}.log", repo)
                row = {"stage": what, "workers": n, "round": r, **figures}
                result["rounds"].append(row)
                print(json.dumps(row), flush=True)
    result["summary"] = {}
    for what in commands:
        for n in (1, 2):
            rows = [x for x in result["rounds"] if x["stage"] == what and x["workers"] == n]
            result["summary"][f"{what}, {n} worker{'s' * (n > 1)}"] = {
                "wall_s": sorted(x["wall_s"] for x in rows),
                "cpu_s": sorted(x["cpu_s"] for x in rows),
                "peak_rss_tree_mb": sorted(x["peak_rss_tree_mb"] for x in rows),
            }
        one = min(x["wall_s"] for x in result["rounds"] if x["stage"] == what and x["workers"] == 1)
        two = min(x["wall_s"] for x in result["rounds"] if x["stage"] == what and x["workers"] == 2)
        result["summary"][f"{what}: speed-up, best of each"] = round(one / two, 2)
    results = json.loads(RESULT_FILE.read_text()) if RESULT_FILE.exists() else {}
    results.pop("machine", None)
    results["workers"] = result
    results["note"] = SHARED
    RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULT_FILE.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    shutil.rmtree(base)
    return result


# ---------------------------------------------------------------------------------------------- report


def report(smaller: str = "small", larger: str = "large") -> dict:
    """The targets, from the saved runs: peak RSS between two sizes (runs named `smaller` and `larger`),
    the larger run's tokenizer peak, disk."""
    results = json.loads(RESULT_FILE.read_text())
    runs = results.get("runs", {})
    out: dict = {}
    if smaller in runs and larger in runs:
        small, large = runs[smaller]["stages"], runs[larger]["stages"]
        out["compared"] = [smaller, larger]
        out["size_ratio"] = round(runs[larger]["shard_text_gb"] / runs[smaller]["shard_text_gb"], 2)
        out["peak_rss_large_over_small"] = {
            step: {
                "ratio": round(large[step]["peak_rss_tree_mb"] / max(small[step]["peak_rss_tree_mb"], 1), 3),
                "target": "the distinct words' term" if step == "tokenizer" else "at most 1.1x",
            }
            for step in large
            if step in small
        }
        for figures in out["peak_rss_large_over_small"].values():
            if figures["target"] == "at most 1.1x":
                figures["met"] = figures["ratio"] <= 1.1
    if larger in runs and "tokenizer" in runs[larger]["stages"]:
        peak = runs[larger]["stages"]["tokenizer"]["peak_rss_tree_mb"]
        out["tokenizer_peak_gib"] = round(peak * 1e6 / 2**30, 2)
        out["tokenizer_fits_24_gib"] = peak * 1e6 <= 24 * 2**30
    for name, run_ in runs.items():
        rows = {}
        for step, figures in run_["stages"].items():
            grew = figures["peak_disk_gb"] - figures["disk_at_start_gb"]
            written = sum(o["bytes"] for o in figures.get("outputs", {}).values()) / 1e9
            one_shard = run_["plan"]["shard_compressed_gb"]
            rows[step] = {"disk_growth_gb": round(grew, 3), "outputs_gb": round(written, 3),
                          "beyond_outputs_gb": round(grew - written, 3),
                          "within_outputs_and_one_shard": grew - written <= one_shard}  # fmt: skip
        out[f"disk_{name}"] = rows
    if "workers" in results:
        out["workers"] = results["workers"].get("summary")
    if larger in runs:
        out["cpu_s_per_gb"] = cpu_rates(runs[larger])
    print(json.dumps(out, indent=2))
    for name, run_ in runs.items():
        print(
            f"\n{name}: {run_['shard_text_gb']} GB of text a shard ({run_.get('started')} to {run_.get('finished', '...')})\n"
        )
        print(
            "| stage | wall | CPU (user + sys) | load | peak RSS, tree (one process) | disk: peak growth (outputs) | outputs |"
        )
        print("|---|---|---|---|---|---|---|")
        for step, f in run_["stages"].items():
            written = sum(o["bytes"] for o in f.get("outputs", {}).values())
            linked = all(o["linked_to_cache"] for o in f.get("outputs", {}).values())
            print(
                f"| {step} | {f['wall_s'] / 60:.1f} min | {f['cpu_s'] / 60:.1f} min | {f['load_average_mean']:.1f} | "
                f"{f['peak_rss_tree_mb']:,} MB ({f['peak_rss_one_process_mb']:,}) | "
                f"{f['peak_disk_gb'] - f['disk_at_start_gb']:.2f} GB ({written / 1e9:.2f}) | "
                f"{'linked' if linked else 'COPIED'} |"
            )
    return out


def cpu_rates(run_: dict) -> dict:
    """CPU seconds (user + sys of the tree) per GB of each stage's input: what scales to another machine
    (divide by its cores where the stage has workers), unlike the wall time of a shared one."""
    stages, generated = run_["stages"], run_["generation"]
    rates = {}
    for step, figures in stages.items():
        name, _, key = step.partition("@")
        if name in ("corpus", "pretokenize") and key in generated:
            gb, of = generated[key]["text_bytes"] / 1e9, "GB of shard text"
        elif name == "download" and key in generated:
            gb, of = generated[key]["compressed_bytes"] / 1e9, "GB of .jsonl.zst"
        elif name == "words" and f"corpus@{key}" in stages:
            gb, of = stages[f"corpus@{key}"]["stats"]["selected_bytes"] / 1e9, "GB of corpus text"
        else:
            continue
        rates[step] = {"cpu_s_per_gb": round(figures["cpu_s"] / gb, 1), "of": of}
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["plan", "run", "all", "workers", "report", "corpus-peak"])
    parser.add_argument("files", nargs="*", type=Path, help="corpus-peak: the shards to build a corpus of")
    parser.add_argument("--gb", type=float, default=None, help="text a shard, GB (default: the largest the disk holds)")
    parser.add_argument("--cap-gb", type=float, default=30.0, help="largest shard the automatic size picks (GB)")
    parser.add_argument("--name", default="large")
    parser.add_argument("--work", type=Path, default=Path("/work/scale"))
    parser.add_argument("--workers", type=int, default=2, help="processes generating the shards")
    parser.add_argument("--rounds", type=int, default=2, help="workers: rounds of 1 and 2 workers")
    parser.add_argument("--keep", action="store_true", help="keep the copy and its data after a run")
    parser.add_argument(
        "--pair", nargs=2, default=("small", "large"), metavar=("SMALLER", "LARGER"), help="report: the runs compared"
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS / "scale.json", help="the results file (default: %(default)s)"
    )
    parser.add_argument(
        "--commit", default="HEAD", help="the code to run (default: HEAD; the working tree's changes are not used)"
    )
    args = parser.parse_args()
    global RESULT_FILE  # the functions above write to it
    RESULT_FILE = args.results
    commit = subprocess.run(
        ["git", "rev-parse", args.commit], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    if args.what == "report":
        report(*args.pair)
        return
    if args.what == "corpus-peak":
        args.work.mkdir(parents=True, exist_ok=True)
        corpus_peak(args.files, args.work, commit)
        return
    if args.what == "workers":
        workers_check(args.gb or 0.4, args.work, args.rounds, commit)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    facts = text_facts()
    free = shutil.disk_usage(args.work).free / 1e9
    large = args.gb or largest_fitting(free, facts, args.cap_gb)
    if args.what == "plan":
        print(
            json.dumps(
                {"free_gb": round(free, 1), "reserve_gb": RESERVE_GB, "text": facts, "plan": plan(large, facts)},
                indent=2,
            )
        )
        return
    if large < 20 and args.gb is None:
        print(f"note: the disk holds shards of {large} GB of text, below the 20 GB asked for", flush=True)
    if args.what == "run":
        run(args.name, large, args.work, args.workers, commit, args.keep)
        return
    check_disk(args.work, plan(large, facts))  # refuse before the small run, not after it
    run("small", large / 4, args.work, args.workers, commit)
    run("large", large, args.work, args.workers, commit, args.keep)
    report()


if __name__ == "__main__":
    main()
