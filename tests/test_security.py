"""Nobody let in: secrets never land in an artifact, params cannot reach outside data/ or a shell."""

import uuid

import pytest
import yaml

from tests.helpers import SAMPLE
from tests.repo import SHARDS, copy_of, edit_params, run, stages_run

pytestmark = pytest.mark.slow  # a full run with planted secrets

MIRROR_TOKEN = "hf_" + uuid.uuid4().hex  # made at run time, so no file holds them unless the run leaks them
WANDB_KEY = uuid.uuid4().hex + "0" * 8


def test_planted_secrets_reach_no_log_stats_params_checkpoint_or_cache_of_a_longer_run(
    built, tmp_path, http_server, monkeypatch
):
    base, server = http_server
    for path in SHARDS.values():
        server.files[f"/{path}.jsonl.zst"] = (SAMPLE / f"{path}.jsonl.zst").read_bytes()
    repo = copy_of(built, tmp_path)

    def through_mirror_and_longer(raw):
        raw["data"]["source"] = base
        raw["train"]["max_steps"] = 9

    edit_params(repo, through_mirror_and_longer)
    monkeypatch.setenv("HF_TOKEN", MIRROR_TOKEN)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    result = run(repo, "dvc", "repro")
    # the downloads rerun (a new source) with the same bytes, so only the stages of the longer
    # training follow them: train continues the run from its last checkpoint, then export and evaluate
    assert stages_run(result) == {f"download@{key}" for key in SHARDS} | {"train", "export", "evaluate"}
    assert "this run trained 3 (from step 6)" in result.stdout
    assert {r["headers"].get("Authorization") for r in server.requests} == {f"Bearer {MIRROR_TOKEN}"}  # in use
    leaks = [
        str(path.relative_to(repo))
        for path in repo.rglob("*")
        if path.is_file()
        and ".git" not in path.parts
        and any(secret.encode() in path.read_bytes() for secret in (MIRROR_TOKEN, WANDB_KEY))
    ]
    assert leaks == []  # logs, stats, dvc.lock, DVCLive params, W&B files, checkpoints, exports, DVC's cache
    assert MIRROR_TOKEN not in result.stdout + result.stderr and WANDB_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("key", ["00; touch pwned", "$(touch pwned)", "`id`", "../00", "a b"])
def test_shard_keys_that_could_reach_a_shell_or_leave_data_are_refused_before_any_command(built, tmp_path, key):
    repo = copy_of(built, tmp_path)
    edit_params(repo, lambda raw: raw["data"]["shards"].update({key: {"path": "val", "sha256": None}}))
    result = run(repo, "python", "stages/download.py", "val", check=False)
    assert result.returncode == 1 and f"data.shards.{key}" in result.stderr and "plain name" in result.stderr
    assert not (repo / "pwned").exists()


def test_every_dvc_command_interpolates_only_validated_names():
    """Commands take ${key} / ${item} from data.shards and corpus.shards, which params.py restricts to
    plain names; no other params value reaches a shell."""
    stages = yaml.safe_load((SAMPLE.parent.parent / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]
        assert cmd.replace("${key}", "").replace("${item}", "").count("$") == 0, (name, cmd)
