"""Readers side by side: the same documents (the sample's two train shards) as .jsonl.zst, parquet,
.jsonl.gz (two members), .jsonl.zstd and plain .jsonl, each read into Records by pipeline.ingest.documents
(reader and parse only, no tokenizer), rounds interleaved, best of 5 each.

    python bench/readers.py

Writes bench/results/readers.json and prints a table for bench/README.md.
"""

import gzip
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from common import REPO, save, timed

from pipeline.ingest import documents
from pipeline.ingest.records import Fields

SHARDS = [REPO / "data/sample/train/00.jsonl.zst", REPO / "data/sample/train/01.jsonl.zst"]
ROUNDS = 5


def read_all(path: Path) -> int:
    """Every document's record; returns the bytes of text read."""
    return sum(record.n_bytes for record in documents.records(path, Fields(), "error"))


def main() -> None:
    raw = b"".join(zstandard.ZstdDecompressor().stream_reader(open(s, "rb")).read() for s in SHARDS)
    records = [json.loads(line) for line in raw.splitlines()]
    half = len(raw) // 2
    cut = raw.index(b"\n", half) + 1  # the gzip file's two members split at a line
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            ".jsonl.zst": Path(tmp) / "x.jsonl.zst",
            ".parquet": Path(tmp) / "x.parquet",
            ".jsonl.gz": Path(tmp) / "x.jsonl.gz",
            ".jsonl.zstd": Path(tmp) / "x.jsonl.zstd",
            ".jsonl": Path(tmp) / "x.jsonl",
        }
        files[".jsonl.zst"].write_bytes(zstandard.ZstdCompressor(level=3).compress(raw))
        files[".jsonl.zstd"].write_bytes(zstandard.ZstdCompressor(level=19).compress(raw))
        files[".jsonl.gz"].write_bytes(gzip.compress(raw[:cut], 6) + gzip.compress(raw[cut:], 6))
        files[".jsonl"].write_bytes(raw)
        table = pa.table(
            {
                "text": [r["text"] for r in records],
                "meta": [{"pile_set_name": r["meta"]["pile_set_name"]} for r in records],
            }
        )
        pq.write_table(table, files[".parquet"], row_group_size=2000, compression="zstd")
        text_bytes = {kind: read_all(path) for kind, path in files.items()}
        assert len(set(text_bytes.values())) == 1, text_bytes  # the same documents in every format
        best = dict.fromkeys(files, float("inf"))
        for _ in range(ROUNDS):
            for kind, path in files.items():
                best[kind] = min(best[kind], timed(lambda path=path: read_all(path)))
        sizes = {kind: path.stat().st_size for kind, path in files.items()}
    base = best[".jsonl.zst"]
    results = {
        "documents": len(records),
        "text_mb": text_bytes[".jsonl.zst"] / 1e6,
        "formats": {
            kind: {"seconds": best[kind], "vs_jsonl_zst": best[kind] / base, "file_mb": sizes[kind] / 1e6}
            for kind in files
        },
    }
    save("readers", results)
    print(f"{len(records):,} documents, {results['text_mb']:.1f} MB of text, best of {ROUNDS} rounds")
    print("| format | file | read into records | vs .jsonl.zst |")
    print("|---|---|---|---|")
    for kind, r in results["formats"].items():
        print(
            f"| `{kind}` | {r['file_mb']:.1f} MB | {r['seconds']:.2f} s ({results['text_mb'] / r['seconds']:.1f} MB/s) | **{r['vs_jsonl_zst']:.2f}x** |"
        )


if __name__ == "__main__":
    main()
