"""What can be checked of the image without a Docker engine: pinned, locked, not root."""

import re

from tests.helpers import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = [line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")]


def test_base_image_is_pinned_by_exact_tag_or_digest():
    (base,) = [line.split()[1] for line in INSTRUCTIONS if line.startswith("FROM ")]
    assert "@sha256:" in base or re.search(r":\d+\.\d+\.\d+-cuda\d+\.\d+", base), base
    assert not base.endswith(":latest") and "cuda" in base


def test_image_and_makefile_install_from_the_same_lock_which_pins_what_shapes_artifacts():
    assert "COPY requirements.lock" in DOCKERFILE and re.search(r"pip install .*-r \S*requirements\.lock", DOCKERFILE)
    assert "--constraint requirements.lock" in (REPO / "Makefile").read_text()
    pins = dict(
        line.split("==")
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for package in ("sentencepiece", "zstandard", "numpy", "torch", "dvc", "pytorch-lightning"):
        assert re.fullmatch(r"\d+(\.\d+)+", pins[package]), package
    assert all(
        ">" not in line and "<" not in line
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if not line.startswith("#")
    )


def test_runs_as_a_user_that_is_not_root_with_sentencepiece_tools_and_dvc_repro():
    users = [line.split()[1] for line in INSTRUCTIONS if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"apt-get install .*\bsentencepiece\b", DOCKERFILE)  # spm_train, spm_encode
    assert INSTRUCTIONS[-1] == 'CMD ["dvc", "repro"]'


def test_build_context_leaves_out_data_and_environments():
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"data", ".venv", ".dvc/cache"} <= ignored
