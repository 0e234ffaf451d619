"""The pipeline through the real `dvc`, on a copy of this repository and its embedded sample."""

import json
import re
import shutil

import pytest
import yaml

from pipeline.config.load import load_params
from tests.helpers import REPO, sample_documents
from tests.repo import SHARDS, copy_of, edit_params, fresh_copy, run, stages_run
from tests.test_pretokenize import documents_from_array

pytestmark = pytest.mark.slow  # full `dvc repro` runs on a copy of the repository


def test_repro_on_the_sample_builds_arrays_that_decode_to_the_documents(built):
    model = built / "data/tokenizer/spm.model"
    for key, path in SHARDS.items():
        texts, _, meta = documents_from_array(built / f"data/tokens/{key}.bin", model)
        assert texts == sample_documents(path), key
        assert meta["vocab_size"] == yaml.safe_load((built / "params.yaml").read_text())["tokenizer"]["vocab_size"]
    assert (built / "data/raw/00/train/00.jsonl.zst").read_bytes() == (
        REPO / "data/sample/train/00.jsonl.zst"
    ).read_bytes()
    lock = yaml.safe_load((built / "dvc.lock").read_text())
    assert set(lock["stages"]) >= {"tokenizer", "pretokenize@val", "corpus@00"}


def test_every_output_is_a_link_to_dvcs_cache_not_a_second_copy(built):
    """With `cache.type: reflink,hardlink,symlink`, DVC 3.67's repro copied a directory output (the
    downloaded shards, data/raw/KEY) into its cache: the raw Pile twice on disk (bench/README.md §12)."""
    cached = {path.stat().st_ino for path in (built / ".dvc/cache/files").rglob("*") if path.is_file()}
    outputs = [
        *(built / "data/raw").rglob("*.jsonl.zst"),
        *(built / "data/corpus").glob("*.txt"),
        *(built / "data/words").glob("*.words"),
        *(built / "data/tokens").glob("*.bin"),
    ]
    assert len(outputs) == len(SHARDS) + 2 + 2 + len(SHARDS)
    copies = [str(path.relative_to(built)) for path in outputs if path.stat().st_ino not in cached]
    assert copies == [], f"copied into DVC's cache, not linked: {copies}"


def test_second_repro_runs_nothing(built):
    result = run(built, "dvc", "repro")
    assert stages_run(result) == set()
    assert "Data and pipelines are up to date" in result.stdout
    assert "up to date" in run(built, "dvc", "status").stdout


def test_vocab_change_reruns_tokenizer_and_what_depends_on_it_only(built, tmp_path):
    """`dvc status` names the stages whose params changed; word-rules then writes the same rules, so
    no shard's words are counted again. DVC's plan with everything downstream forced (`--dry
    --force-downstream`) is what a real `dvc repro` reruns once the model's bytes change."""
    repo = copy_of(built, tmp_path)
    edit_params(repo, lambda raw: raw["tokenizer"].update(vocab_size=4000))
    status = run(repo, "dvc", "status").stdout
    assert set(re.findall(r"^(\S+):$", status, re.MULTILINE)) == {"word-rules", "tokenizer"}, status
    assert stages_run(run(repo, "dvc", "repro", "word-rules")) == {"word-rules"}
    status = run(repo, "dvc", "status").stdout
    assert set(re.findall(r"^(\S+):$", status, re.MULTILINE)) == {"tokenizer"}, status  # words@KEY: up to date
    plan = run(repo, "dvc", "repro", "--dry", "--force-downstream")
    assert stages_run(plan) >= {"tokenizer", "train", "export", "evaluate"} | {f"pretokenize@{k}" for k in SHARDS}
    assert not {stage for stage in stages_run(plan) if stage.startswith(("words", "corpus"))}
    assert load_params(repo / "params.yaml").tokenizer["vocab_size"] == 4000


def test_both_trainers_make_the_same_model_from_the_sample(built, tmp_path):
    """tokenizer.trainer: spm runs SentencePiece's spm_train on the corpus text; the exact trainer's
    model, from the word-count tables, is the same file."""
    repo = copy_of(built, tmp_path)
    edit_params(repo, lambda raw: raw["tokenizer"].update(trainer="spm"))
    result = run(repo, "dvc", "repro", "--single-item", "word-rules", "tokenizer")
    assert "spm_train on data/corpus/00.txt,data/corpus/01.txt" in result.stdout.replace(", ", ",")
    for suffix in (".model", ".vocab"):  # the same bytes: nothing downstream reruns for the switch
        path = f"data/tokenizer/spm{suffix}"
        assert (repo / path).read_bytes() == (built / path).read_bytes(), path
    assert yaml.safe_load((repo / "stats/tokenizer.json").read_text())["trainer"] == "spm"


def test_training_logs_to_both_loggers_and_evaluation_reaches_dvc_metrics(built):
    shown = json.loads(run(built, "dvc", "metrics", "show", "--json").stdout)[""]["data"]
    assert shown["metrics/train/metrics.json"]["data"]["train"]["loss"] > 0
    assert shown["metrics/eval.json"]["data"]["test"]["bpb"] > 0
    assert (built / "metrics/train/plots/metrics/train/loss.tsv").exists()
    assert list((built / "wandb").glob("offline-run-*"))
    evaluation = yaml.safe_load((built / "stats/eval.json").read_text())
    assert set(evaluation) == {"val", "test"} and 0 < evaluation["test"]["bpb"] < 20
    assert set(evaluation["val"]["per_group"]) == {"Django docs", "Django code", "Django translations"}


def test_metrics_hold_the_headline_numbers_only_and_fit_a_terminal(built):
    """Everything else a stage counts is a plain stats file, versioned but not a column of `dvc exp show`."""
    shown = json.loads(run(built, "dvc", "metrics", "show", "--json").stdout)[""]["data"]
    assert set(shown) == {"metrics/tokenizer.json", "metrics/train/metrics.json", "metrics/eval.json"}
    assert shown["metrics/tokenizer.json"]["data"] == {"roundtrip_exact": 1.0}
    headline = shown["metrics/eval.json"]["data"]
    full = yaml.safe_load((built / "stats/eval.json").read_text())
    for split in ("val", "test"):
        assert headline[split] == {"bpb": full[split]["bpb"], "loss": full[split]["loss"]}
        assert len(full[split]["per_group"]) == 3  # per group: in the stats file (and metrics/eval.png)
    train = shown["metrics/train/metrics.json"]["data"]["train"]
    assert {"loss", "tokens"} <= set(train) and not {"tokens_per_s", "mfu"} & set(train)  # no wall-clock figure
    for stats in ("stats/download/00.json", "stats/corpus/00.json", "stats/tokenizer.json", "data/tokens/val.json"):
        assert (built / stats).is_file(), stats
    table = run(built, "dvc", "metrics", "show").stdout
    assert max(map(len, table.splitlines())) <= 200, table  # was a row per stats file, well over 100 columns
    assert "epoch" not in table  # one endless epoch: a column that says nothing


def test_no_file_dvc_hashes_or_diffs_records_a_wall_clock_figure(built):
    """Stats, metrics and the arrays' metadata are functions of inputs and params, so a clean clone
    makes them byte for byte; a duration or a rate goes to the stage's summary, never here."""
    timing = re.compile(r'"([^"]*(?:seconds|_per_s|mb_s|duration|elapsed|time)[^"]*)":')
    hashed = [*(built / "stats").rglob("*.json"), *(built / "metrics").rglob("*.json")]
    hashed += [*(built / "data/tokens").glob("*.json"), built / "data/model/config.json"]
    assert built / "stats/words/00.json" in hashed
    for path in hashed:
        assert not timing.findall(path.read_text()), (path, timing.findall(path.read_text()))


def test_loss_curve_and_bits_per_byte_are_pictures_dvc_plots_shows_offline(built, tmp_path):
    from PIL import Image

    for picture in ("metrics/train/loss.png", "metrics/eval.png"):
        with Image.open(built / picture) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 300
        assert (built / picture).stat().st_size > 10_000  # axes, labels, lines: not an empty canvas
    repo = copy_of(built, tmp_path)
    shown = run(repo, "dvc", "plots", "show", "--json")
    plots = json.loads(shown.stdout)["data"]
    assert {"metrics/train/loss.png", "metrics/eval.png"} <= set(plots)
    run(repo, "dvc", "plots", "show", "-o", "rendered")
    page = (repo / "rendered" / "index.html").read_text()
    assert "loss.png" in page and "eval.png" in page


def test_sample_prints_a_continuation_of_the_prompt_that_its_seed_decides(built):
    args = ["pile-gpt", "sample", "--prompt", "def ", "--max-new-tokens", "20", "--seed"]
    first, again, other = (run(built, *args, seed).stdout for seed in ("3", "3", "4"))
    assert first == again and first.startswith("def ") and len(first) > len("def ")
    assert other != first and other.startswith("def ")


def test_the_console_command_lists_every_subcommand_and_names_a_missing_model(tmp_path):
    shown = run(tmp_path, "pile-gpt", "--help").stdout
    assert all(command in shown for command in ("sample", "harness", "gather")) and "continue a prompt" in shown
    result = run(tmp_path, "pile-gpt", "sample", "--prompt", "x", check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: data/model/model.safetensors: missing")


def test_one_shard_stage_reruns_alone_and_settings_that_cannot_change_outputs_do_not(built, tmp_path):
    """pretokenize.workers and batch_bytes and the download's retry settings are no stage's params: a
    change reruns nothing, and a forced rerun under them gives the same bytes, hashes and dvc.lock."""
    repo = copy_of(built, tmp_path)
    before = (repo / "dvc.lock").read_text()
    edit_params(repo, lambda raw: raw["pretokenize"].update(workers=1, batch_bytes=1000))
    edit_params(repo, lambda raw: raw["download"].update(retries=2, backoff_s=0.5, timeout_s=30.0))
    assert stages_run(run(repo, "dvc", "repro")) == set()
    result = run(repo, "dvc", "repro", "--force", "--single-item", "download@val", "pretokenize@val")
    assert stages_run(result) == {"download@val", "pretokenize@val"} and "is cached" not in result.stdout
    assert "with 1 workers" in result.stdout  # the setting was in force
    assert (repo / "dvc.lock").read_text() == before  # same bytes, same hashes


def test_a_stray_file_in_a_folder_a_stage_depends_on_stops_the_stage_naming_it(built, tmp_path):
    """train, export and evaluate depend on the whole of data/tokens, the tokenizer on data/corpus: a file
    no stage makes (a shard removed from params, a copy left by hand) would change the folder's hash in
    dvc.lock, which no clean clone could reproduce. The stage refuses, naming the file and the way out."""
    repo = copy_of(built, tmp_path)
    (repo / "data/tokens/02.bin").write_bytes(b"\0\0")
    (repo / "data/corpus/07.txt").write_text("a corpus part of a shard that is no longer listed\n")
    stale = set(re.findall(r"^(\S+):$", run(repo, "dvc", "status").stdout, re.MULTILINE))
    assert stale == {"tokenizer", "train", "export", "evaluate"}, stale  # the folders' hashes changed
    train = run(repo, "python", "stages/train.py", check=False)  # the command `dvc repro` would run
    assert train.returncode == 1 and "error: data/tokens/02.bin: no stage makes this file" in train.stderr
    assert "rm data/tokens/02.*" in train.stderr and "add the key '02' under data.shards" in train.stderr
    tokenizer = run(repo, "python", "stages/tokenizer.py", check=False)
    assert tokenizer.returncode == 1 and "error: data/corpus/07.txt: no stage makes this file" in tokenizer.stderr
    (repo / "data/tokens/02.bin").unlink()
    (repo / "data/corpus/07.txt").unlink()
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status").stdout


def test_corrupt_mirror_file_fails_with_its_name_and_leaves_no_output(built, tmp_path):
    repo = copy_of(built, tmp_path)
    sample = repo / "data/sample/val.jsonl.zst"
    sample.write_bytes(sample.read_bytes()[:-2000])
    result = run(repo, "dvc", "repro", "--force", "download@val", check=False)  # the mirror is no dependency
    assert result.returncode != 0 and "val.jsonl.zst: sha256 mismatch" in result.stderr
    assert "Traceback" not in result.stderr and not (repo / "data/raw/val/val.jsonl.zst").exists()
    edit_params(repo, lambda raw: raw["data"]["shards"]["val"].update(sha256=None))
    result = run(repo, "dvc", "repro", "pretokenize@val", check=False)
    assert result.returncode != 0 and "data/raw/val/val.jsonl.zst: truncated" in result.stderr
    assert not (repo / "data/tokens/val.bin").exists() and not list((repo / "data/tokens").glob("val.*"))


def test_stage_given_a_wrong_key_says_so_without_a_traceback(built):
    result = run(built, "python", "stages/pretokenize.py", "nope", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: params.yaml: data.shards has no entry 'nope'")


@pytest.mark.parametrize("preset", ["pile", "fineweb-edu", "slimpajama"])
def test_a_preset_plans_every_stage_without_the_network(tmp_path, preset):
    """`dvc status` shows every stage as to be run; `dvc repro --dry` stops after the downloads,
    whose outputs later stages need to exist (treeverse/dvc#9021), so both are checked."""
    repo = fresh_copy(tmp_path)
    shutil.copy(repo / f"presets/{preset}.yaml", repo / "params.yaml")
    p = load_params(repo / "params.yaml")
    keys = list(p.data.shards)
    every = (
        {f"download@{k}" for k in keys}
        | {f"{stage}@{k}" for k in p.corpus.shards for stage in ("corpus", "words")}
        | {"word-rules", "tokenizer", "train", "export", "evaluate"}
        | {f"pretokenize@{k}" for k in keys}
    )
    status = run(repo, "dvc", "status").stdout
    assert set(re.findall(r"^(\S+):$", status, re.MULTILINE)) == every
    assert len(every) == {"pile": 73, "fineweb-edu": 37, "slimpajama": 33}[preset]
    dry = run(repo, "dvc", "repro", "--dry", "--ignore-errors")
    assert stages_run(dry) == {f"download@{k}" for k in keys} | {"word-rules"}  # word-rules needs params only
    assert not (repo / "data/raw").exists()


def test_the_export_stage_leaves_a_transformers_model_and_the_harness_agrees_with_evaluate(built, tmp_path):
    repo = copy_of(built, tmp_path)
    report = json.loads((repo / "stats/export.json").read_text())
    assert report["architecture"] == "Qwen3ForCausalLM"  # params.yaml: the modern model, with QK-norm
    assert report["logits_max_abs_diff"] <= 1e-4
    assert report["tokenizer"].startswith("tokenizer.json (fast") and report["texts_checked"] > 255
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
    } <= {path.name for path in (repo / "data/model/hf").iterdir()}
    result = run(repo, "pile-gpt", "harness", "--splits", "val")
    assert "== lm-evaluation-harness ==" in result.stdout
    harness = json.loads((repo / "metrics/harness.json").read_text())
    ours = json.loads((repo / "metrics/eval.json").read_text())["val"]["bpb"]
    # the harness scores each document alone and not its separator: within 0.5% (README, evaluate)
    assert abs(harness["val"]["bpb"] / ours - 1) <= 0.005, (harness["val"]["bpb"], ours)
    assert set(harness["val"]["per_group"]) == {"Django docs", "Django code", "Django translations"}


def test_a_download_dvc_gave_up_on_resumes_from_its_partial_file_on_the_next_repro(tmp_path, http_server):
    """DVC empties a stage's output directory before it reruns the stage: the partial file lives
    outside it (data/raw/.partial/KEY/), so the next `dvc repro` asks only for the rest."""
    base, server = http_server
    body = (REPO / "data/sample/val.jsonl.zst").read_bytes()
    server.files["/val.jsonl.zst"] = body
    server.drop_after = 50_000
    repo = fresh_copy(tmp_path)

    def through_the_server(raw):
        raw["data"]["source"] = base
        raw["download"].update(retries=0, backoff_s=0.01)

    edit_params(repo, through_the_server)
    failed = run(repo, "dvc", "repro", "download@val", check=False)
    assert failed.returncode != 0 and "50,000 bytes kept" in failed.stderr
    partial = repo / "data/raw/.partial/val/val.jsonl.zst.part"
    assert partial.stat().st_size == 50_000 and not (repo / "data/raw/val/val.jsonl.zst").exists()
    server.drop_after = None
    run(repo, "dvc", "repro", "download@val")
    assert server.requests[-1]["headers"]["Range"] == "bytes=50000-"
    assert (repo / "data/raw/val/val.jsonl.zst").read_bytes() == body and not partial.exists()


def test_a_queued_experiment_and_one_in_the_workspace_each_train_afresh_with_their_own_metrics(built, tmp_path):
    """How users compare variants: `dvc exp run --queue`, then the queue run (`--run-all` runs it with
    DVC's own queue worker and waits), and `dvc exp run` in the workspace, where the built run's
    checkpoints are: neither experiment may resume from another run's checkpoints. Each runs up to
    `train` (its own validation is in metrics/train/metrics.json); export and evaluate add nothing here."""
    repo = copy_of(built, tmp_path)
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "built")
    run(repo, "dvc", "exp", "run", "--queue", "-n", "lr-low", "-S", "train.lr=0.001", "train")
    run(repo, "dvc", "exp", "run", "--run-all", "-j", "1")
    assert "Success" in run(repo, "dvc", "queue", "status").stdout
    logs = run(repo, "dvc", "queue", "logs", "lr-low").stdout
    assert "Running stage 'train'" in logs and re.search(r"run\s+fresh", logs) and "resumed" not in logs, logs[-3000:]
    in_workspace = run(repo, "dvc", "exp", "run", "-n", "lr-mid", "-S", "train.lr=0.003", "train")
    assert "starting afresh and clearing data/model/checkpoints" in in_workspace.stdout + in_workspace.stderr
    assert "train.lr" in in_workspace.stdout + in_workspace.stderr
    table = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    found = {}
    for experiment in (e for row in table for e in row.get("experiments") or []):
        for revision in experiment["revs"]:
            data = revision["data"]
            if revision.get("name") in ("lr-low", "lr-mid"):
                found[revision["name"]] = (
                    data["params"]["params.yaml"]["data"]["train"]["lr"],
                    data["metrics"]["metrics/train/metrics.json"]["data"]["val"]["bpb"],
                    data["metrics"]["metrics/train/metrics.json"]["data"]["step"],
                )
    assert {name: values[0] for name, values in found.items()} == {"lr-low": 0.001, "lr-mid": 0.003}
    assert found["lr-low"][1] != found["lr-mid"][1]  # each its own model and validation
    whole_run = json.loads((built / "metrics/train/metrics.json").read_text())["step"]  # the built run, from scratch
    assert {values[2] for values in found.values()} == {whole_run}
