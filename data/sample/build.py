"""Rebuild the embedded mini-Pile in data/sample/ from its pinned input.

The input is the Django 5.2.8 source distribution from PyPI (BSD-3-Clause), checked against its
sha256. Each selected file becomes one document; documents are assigned to train/00, train/01,
val and test by a hash of their path, so the split is stable and needs no random state.

    python data/sample/build.py            # downloads the sdist with pip, then writes the shards
    python data/sample/build.py --sdist path/to/django-5.2.8.tar.gz
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import zstandard

SDIST = "django-5.2.8.tar.gz"
SDIST_REQUIREMENT = "Django==5.2.8"
SDIST_SHA256 = "23254866a5bb9a2cfa6004e8b809ec6246eba4b58a7589bc2772f1bcc8456c7f"
ZSTD_LEVEL = 19
OUT_DIR = Path(__file__).resolve().parent

# (pile_set_name, predicate on the path inside the sdist, below the top folder)
LICENSE_FILES = ("LICENSE", "LICENSE.python")  # Django's licence, and the one for code it took from Python
SOURCES = [
    ("Django docs", lambda p: p.startswith("docs/") and p.endswith(".txt")),
    ("Django code", lambda p: p.startswith("django/") and p.endswith(".py")),
    ("Django translations", lambda p: p.startswith("django/") and p.endswith(".po")),
]


def split_of(path: str) -> str:
    """Stable split from the path's hash: 5% val, 5% test, the rest over two train shards."""
    bucket = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big") % 100
    if bucket < 5:
        return "val"
    if bucket < 10:
        return "test"
    return "train/00" if bucket % 2 == 0 else "train/01"


def fetch_sdist(directory: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(directory),
            SDIST_REQUIREMENT,
        ],
        check=True,
    )
    return directory / SDIST


def read_documents(sdist: Path) -> dict[str, list[tuple[str, dict]]]:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sys.exit(f"error: {sdist}: sha256 {digest} is not the pinned {SDIST_SHA256}")
    shards: dict[str, list[tuple[str, dict]]] = {"train/00": [], "train/01": [], "val": [], "test": []}
    with tarfile.open(sdist) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.isfile():
                continue
            path = member.name.split("/", 1)[1]
            if path in LICENSE_FILES:
                (OUT_DIR / "LICENSES").mkdir(exist_ok=True)
                (OUT_DIR / "LICENSES" / f"Django-{path}").write_bytes(tar.extractfile(member).read())
                continue
            label = next((name for name, wanted in SOURCES if wanted(path)), None)
            if label is None:
                continue
            text = tar.extractfile(member).read().decode("utf-8")
            if not text.strip():
                continue
            record = {"text": text, "meta": {"pile_set_name": label}}
            shards[split_of(path)].append((hashlib.sha256(path.encode()).hexdigest(), record))
    return shards


def write_shard(path: Path, documents: list[tuple[str, dict]]) -> int:
    lines = b"".join(
        json.dumps(record, ensure_ascii=False).encode() + b"\n"
        for _, record in sorted(documents, key=lambda item: item[0])  # order by hash: a stable shuffle
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(lines))
    return sum(len(record["text"].encode()) for _, record in documents)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdist", type=Path, help=f"a local copy of {SDIST} (else pip downloads it)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or fetch_sdist(Path(tmp))
        shards = read_documents(sdist)
    sums = []
    for name, documents in shards.items():
        out = OUT_DIR / f"{name}.jsonl.zst"
        text_bytes = write_shard(out, documents)
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        sums.append(f"{digest}  {name}.jsonl.zst")
        print(
            f"{name:9s} {len(documents):5d} docs {text_bytes / 1e6:6.2f} MB text "
            f"{out.stat().st_size / 1e6:5.2f} MB zstd  sha256 {digest}"
        )
    (OUT_DIR / "SHA256SUMS").write_text("\n".join(sums) + "\n")


if __name__ == "__main__":
    main()
