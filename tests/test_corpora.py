"""The presets for today's corpora, run on miniatures of their real layouts and field names (built
from the sample) through the download, corpus and pretokenize stages."""

import gzip
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from pipeline.config import formats, layout
from pipeline.config.layout import CORPUS_DIR, STATS_DIR
from pipeline.config.load import load_params
from pipeline.config.schema import Params
from pipeline.encode import pretokenize
from pipeline.ingest import download
from pipeline.ingest.records import UNLABELLED
from pipeline.tokenizer import corpus
from tests.helpers import REPO
from tests.test_documents import sample_records
from tests.test_pretokenize import documents_from_array


def lines(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def fineweb_edu_row(i: int, record: dict) -> dict:
    """A row with FineWeb-Edu's columns."""
    return {
        "text": record["text"],
        "id": f"<urn:uuid:{i:08d}>",
        "dump": "CC-MAIN-2024-10",
        "url": f"https://example.org/{i}",
        "date": "2024-02-21T00:00:00Z",
        "file_path": "s3://commoncrawl/crawl-data/CC-MAIN-2024-10/x.warc.gz",
        "language": "en",
        "language_score": 0.97,
        "token_count": len(record["text"].split()),
        "score": 3.4,
        "int_score": 3,
    }


def split_in(records: list, parts: int) -> list[list]:
    size = -(-len(records) // parts)
    return [records[i : i + size] for i in range(0, len(records), size)]


def prepare(tmp_path, monkeypatch, small_model, preset: str, edit) -> Params:
    """The params file `preset` (a name under presets/, or params.yaml), edited to the miniature's
    shards and pointed at `tmp_path/mirror`, as params.yaml of a working directory with the tokenizer."""
    source = REPO / "params.yaml" if preset == "params.yaml" else REPO / "presets" / f"{preset}.yaml"
    raw = yaml.safe_load(source.read_text())
    raw["data"]["source"] = str(tmp_path / "mirror")
    raw["pretokenize"]["workers"] = 2
    edit(raw)
    work = tmp_path / "work"
    (work / "data/tokenizer").mkdir(parents=True)
    shutil.copy(small_model, work / "data/tokenizer/spm.model")
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(work)
    return load_params()


def run_shard_stages(p: Params, keys: list[str]) -> None:
    for key in keys:
        download.run_stage(p, key)
        pretokenize.run_stage(p, key)
    for key in p.corpus.shards:
        corpus.run_stage(p, key)


def texts_and_groups(p: Params, key: str, model) -> tuple[list[str], list[str]]:
    texts, docs, meta = documents_from_array(layout.tokens_path(key), model)
    return texts, [meta["groups"][i] for i in docs.set_id]


def test_fineweb_edu_parquet_files_through_the_stages(tmp_path, monkeypatch, small_model):
    records = sample_records("val") + sample_records("test")
    train, held_out = records[: len(records) // 2], records[len(records) // 2 :]
    mirror = tmp_path / "mirror/sample/10BT"
    mirror.mkdir(parents=True)
    for name, part in (("000_00000", train), ("013_00000", held_out)):
        rows = [fineweb_edu_row(i, r) for i, r in enumerate(part)]
        pq.write_table(pa.Table.from_pylist(rows), mirror / f"{name}.parquet", row_group_size=64)

    def miniature(raw):
        raw["data"]["shards"] = {k: v for k, v in raw["data"]["shards"].items() if k in ("000", "val")}
        raw["corpus"]["shards"] = ["000"]

    p = prepare(tmp_path, monkeypatch, small_model, "fineweb-edu", miniature)
    run_shard_stages(p, ["000", "val"])
    for key, part in (("000", train), ("val", held_out)):
        texts, groups = texts_and_groups(p, key, small_model)
        assert texts == [r["text"] for r in part] and set(groups) == {UNLABELLED}
    assert (formats.raw_files(p.data, "val")[0]).read_bytes() == (mirror / "013_00000.parquet").read_bytes()
    assert (CORPUS_DIR / "000.txt").stat().st_size > 0


def test_slimpajama_chunk_files_are_one_shard_each_with_their_groups(tmp_path, monkeypatch, small_model):
    records = sample_records("val")
    for i, r in enumerate(records):  # SlimPajama's field: meta.redpajama_set_name
        r["meta"] = {"redpajama_set_name": ["RedPajamaGithub", "RedPajamaArXiv"][i % 2]}
    train, held_out = records[: len(records) * 2 // 3], records[len(records) * 2 // 3 :]
    for directory, stem, part, count in (
        ("train/chunk1", "example_train", train, 4),
        ("validation/chunk1", "example_holdout", held_out, 2),
    ):
        (tmp_path / "mirror" / directory).mkdir(parents=True)
        for n, chunk in enumerate(split_in(part, count)):
            data = zstandard.ZstdCompressor().compress(lines(chunk))
            (tmp_path / "mirror" / directory / f"{stem}_{n}.jsonl.zst").write_bytes(data)

    def miniature(raw):
        shards = raw["data"]["shards"]
        raw["data"]["shards"] = {
            "chunk1": {**shards["chunk1"], "numbers": [0, 4]},
            "val": {**shards["val"], "numbers": [0, 2]},
        }
        raw["corpus"]["shards"] = ["chunk1"]
        raw["evaluate"]["splits"] = ["val"]

    p = prepare(tmp_path, monkeypatch, small_model, "slimpajama", miniature)
    assert len(formats.raw_files(p.data, "chunk1")) == 4
    run_shard_stages(p, ["chunk1", "val"])
    for key, part in (("chunk1", train), ("val", held_out)):
        texts, groups = texts_and_groups(p, key, small_model)
        assert texts == [r["text"] for r in part]
        assert groups == [r["meta"]["redpajama_set_name"] for r in part]
    stats = json.loads((STATS_DIR / "download/chunk1.json").read_text())
    assert [f["file"] for f in stats["files"]] == [f"train/chunk1/example_train_{n}.jsonl.zst" for n in range(4)]


def test_dolma_style_gzip_files_with_a_top_level_group(tmp_path, monkeypatch, small_model):
    """Dolma: .jsonl.gz, the group in `source`; the sample's params pointed at it."""
    records = [
        {"id": str(i), "text": r["text"], "source": r["meta"]["pile_set_name"]}
        for i, r in enumerate(sample_records("val"))
    ]
    (tmp_path / "mirror/v1_7").mkdir(parents=True)
    halves = split_in(records, 2)
    (tmp_path / "mirror/v1_7/books-0000.jsonl.gz").write_bytes(b"".join(gzip.compress(lines(h)) for h in halves))

    def miniature(raw):
        raw["data"]["shards"]["books"] = {"path": "v1_7/books-0000.jsonl.gz"}
        raw["data"]["group_field"] = "source"

    shutil.copytree(REPO / "data/sample", tmp_path / "mirror", dirs_exist_ok=True)
    p = prepare(tmp_path, monkeypatch, small_model, "params.yaml", miniature)
    download.run_stage(p, "books")
    pretokenize.run_stage(p, "books")
    texts, groups = texts_and_groups(p, "books", small_model)
    assert texts == [r["text"] for r in records] and groups == [r["source"] for r in records]


@pytest.mark.parametrize("preset", ["fineweb-edu", "slimpajama"])
def test_new_presets_document_size_licence_and_tokenizer(preset):
    text = (REPO / "presets" / f"{preset}.yaml").read_text()
    for word in ("Size (published)", "Licence", "Tokenizer"):
        assert word in text, (preset, word)
