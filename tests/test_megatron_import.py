"""A Megatron pair brought in as a shard: the array pretokenize would make, nothing retokenized; refused,
naming the file, when its vocabulary, dtype or layout is not ours."""

import json
import re

import numpy as np
import pytest
import yaml

from pipeline.config import layout
from pipeline.config.load import load_params
from pipeline.config.schema import PretokenizeParams
from pipeline.core import files
from pipeline.core.errors import PipelineError
from pipeline.encode import megatron_import, pretokenize, token_files
from pipeline.export.hf import fast_tokenizer
from pipeline.ingest import download
from pipeline.ingest.records import UNLABELLED
from pipeline.tokenizer import pieces
from tests.helpers import REPO, SAMPLE

ONE = PretokenizeParams(workers=1, batch_bytes=1 << 16)
TWO = PretokenizeParams(workers=2, batch_bytes=1 << 16)  # small batches: many of them, over two processes


@pytest.fixture(scope="module")
def ours(small_model, tmp_path_factory):
    """The sample's val shard as pretokenize writes it, in uint16 and uint32, and its documents."""
    work = tmp_path_factory.mktemp("ours")
    out = {}
    for dtype in ("uint16", "uint32"):
        path = work / dtype / "val.bin"
        pretokenize.run([SAMPLE / "val.jsonl.zst"], small_model, path, PretokenizeParams(workers=1, dtype=dtype))
        ids, starts = token_files.open_tokens(path), token_files.open_documents(path).starts
        bounds = [*starts, len(ids)]
        out[dtype] = (path, [np.asarray(ids[a:b]) for a, b in zip(bounds, bounds[1:])])
    return out


def megatron_pair(directory, documents, dtype, split=False):
    """The documents as megatron-core's own writer lays them out (each in two sequences with `split`, as
    preprocess_data.py's sentence splitting does); the pair's .bin."""
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset", reason="megatron-core is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    builder = indexed.IndexedDatasetBuilder(
        str(directory / "pair.bin"), dtype=np.uint16 if dtype == "uint16" else np.int32
    )
    for document in documents:
        cut = len(document) // 2 if split and len(document) > 1 else len(document)
        builder.add_document(document, [cut, len(document) - cut] if cut < len(document) else [cut])
    builder.finalize(str(directory / "pair.idx"))
    return directory / "pair.bin"


def datatrove_pair(directory, documents, token_size=2):
    """The documents as datatrove's MegatronDocumentTokenizer writes them; the pair's .bin."""
    pytest.importorskip("datatrove", reason="datatrove is not installed")
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronTokenizedFile

    writer = MegatronTokenizedFile(str(directory), "pair", token_size=token_size)
    for document in documents:
        writer.write(document.tolist())
    writer.close()
    return directory / "pair.bin"


def tokenizer_json(small_model, directory):
    """The pipeline's tokenizer as the export stage writes it for transformers: a tokenizer.json."""
    directory.mkdir(parents=True, exist_ok=True)
    fast_tokenizer(small_model).save(str(directory / "tokenizer.json"))
    return directory / "tokenizer.json"


@pytest.mark.parametrize(
    "writer, dtype, params",
    [("megatron", "uint16", ONE), ("megatron-split", "uint32", TWO), ("datatrove", "uint16", TWO)],
)
def test_a_pair_imports_to_the_array_pretokenize_makes_of_the_same_documents(
    ours, small_model, tmp_path, writer, dtype, params
):
    reference, documents = ours[dtype]
    if writer == "datatrove":
        pair, tokenizer = datatrove_pair(tmp_path, documents), tokenizer_json(small_model, tmp_path / "hf")
    else:
        pair, tokenizer = megatron_pair(tmp_path, documents, dtype, split=writer == "megatron-split"), small_model
    meta = megatron_import.run(pair, tokenizer, small_model, tmp_path / "out" / "val.bin", params)
    out = tmp_path / "out" / "val.bin"
    for suffix in (".bin", ".idx"):  # one sequence per document, whatever the pair had
        assert out.with_suffix(suffix).read_bytes() == reference.with_suffix(suffix).read_bytes(), suffix
    # each document's bytes from its decoded text: the original's, the tokenizer being lossless
    assert np.array_equal(token_files.open_documents(out).n_bytes, token_files.open_documents(reference).n_bytes)
    expected = token_files.read_metadata(reference)
    for field in ("dtype", "n_tokens", "n_docs", "n_bytes", "sha256", "vocab_size", "eos_id", "tokenizer_sha256"):
        assert meta[field] == expected[field], field
    assert meta["groups"] == [UNLABELLED] and meta["imported"]["tokenizer"] == str(tokenizer)


def refused(tmp_path, pair, tokenizer, model, pattern, params=ONE):
    with pytest.raises(PipelineError, match=pattern):
        megatron_import.run(pair, tokenizer, model, tmp_path / "out" / "val.bin", params)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "a refused import wrote files"


def test_a_tokenizer_of_another_vocabulary_is_refused_naming_it(ours, small_model, tmp_path):
    pair = megatron_pair(tmp_path, ours["uint16"][1], "uint16")
    proto = pieces.read(small_model)
    proto.pieces[500].piece, proto.pieces[501].piece = proto.pieces[501].piece, proto.pieces[500].piece
    other = tmp_path / "other.model"
    other.write_bytes(proto.SerializeToString())
    refused(
        tmp_path, pair, other, small_model, r"other\.model: not the vocabulary of the pipeline's tokenizer .*id 500"
    )
    spec = json.loads(tokenizer_json(small_model, tmp_path / "hf").read_text())
    spec["model"]["vocab"] = {piece: i for piece, i in spec["model"]["vocab"].items() if i < 999}
    (tmp_path / "hf" / "tokenizer.json").write_text(json.dumps(spec))
    refused(
        tmp_path, pair, tmp_path / "hf" / "tokenizer.json", small_model, r"tokenizer\.json: .*999 pieces there, 1,000"
    )


def test_ids_outside_the_vocabulary_are_refused_naming_the_token(ours, small_model, tmp_path):
    pair = megatron_pair(tmp_path, ours["uint16"][1], "uint16")
    ids = np.fromfile(pair, dtype="<u2")
    ids[1234] = 4321  # the tokenizer has 1,000 pieces
    ids.tofile(pair)
    refused(tmp_path, pair, small_model, small_model, r"pair\.bin: token 1,234 \(byte 2,468\) is id 4321, outside", TWO)


def test_documents_without_the_separator_are_refused(ours, small_model, tmp_path):
    pair = datatrove_pair(tmp_path, [document[:-1] for document in ours["uint16"][1]])  # no --append-eod
    refused(
        tmp_path,
        pair,
        small_model,
        small_model,
        r"pair\.bin: document 0 .* does not end with the separator.*--append-eod",
    )


def test_an_index_of_other_values_or_a_bin_of_another_size_is_refused(ours, small_model, tmp_path):
    pair = megatron_pair(tmp_path, ours["uint16"][1], "uint16")
    index = pair.with_suffix(".idx")
    header = index.read_bytes()
    index.write_bytes(header[:17] + b"\x07" + header[18:])  # float32
    refused(tmp_path, pair, small_model, small_model, r"pair\.idx: byte 17: dtype code 7 \(float32\): not token ids")
    index.write_bytes(header)
    with open(pair, "ab") as f:
        f.write(b"\0\0")
    refused(tmp_path, pair, small_model, small_model, r"pair\.bin: [\d,]+ bytes, but .*pair\.idx indexes [\d,]+ tokens")


def test_a_uint16_pair_for_a_vocabulary_over_65536_pieces_is_refused(ours, small_model, tmp_path):
    proto = pieces.read(small_model)
    for i in range(70_000 - len(proto.pieces)):
        proto.pieces.add(piece=f"extra{i}", score=-1e6, type=proto.pieces[-1].type)
    big = tmp_path / "big.model"
    big.write_bytes(proto.SerializeToString())
    pair = megatron_pair(tmp_path, ours["uint16"][1][:3], "uint16")
    refused(
        tmp_path, pair, big, big, r"pair\.idx: byte 17: dtype code 8 \(uint16\) holds ids below 65,536.*70,000 pieces"
    )


def shard_params(tmp_path, entry: dict, **more):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["shards"]["02"] = entry
    for section, values in more.items():
        raw[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_the_documented_shard_entry_passes_the_params_checks_and_mistakes_fail_naming_the_key(tmp_path):
    block = re.search(r"<!-- settings: import -->\n```yaml\n(.*?)```", (REPO / "docs/interop.md").read_text(), re.S)
    entry = yaml.safe_load(block.group(1))["data"]["shards"]["02"]
    assert layout.keys(shard_params(tmp_path, entry).data, "train")[-1] == "02"
    for broken, message in [
        ({**entry, "tokenizer": None}, "data.shards.02.tokenizer: missing: a Megatron pair needs the tokenizer"),
        ({"path": "train/02", "tokenizer": "spm.model"}, "data.shards.02.tokenizer: only a Megatron pair"),
        ({**entry, "path": "pile_{:02d}.bin", "numbers": [0, 2]}, "data.shards.02.numbers: a Megatron pair is one"),
        ({**entry, "source": "s3://bucket"}, "data.shards.02.source: 's3://bucket': only file://"),
    ]:
        with pytest.raises(PipelineError, match=re.escape(message)):
            shard_params(tmp_path, broken)
    with pytest.raises(PipelineError, match=re.escape("corpus.shards[1]: '02' is a Megatron pair")):
        shard_params(tmp_path, entry, corpus={"shards": ["00", "02"]})


def test_download_and_pretokenize_at_key_bring_a_pair_from_its_own_source(ours, small_model, tmp_path, monkeypatch):
    """The stages' own functions, in a repository laid out as DVC runs them: the pair and its tokenizer
    come from the shard's `source` (not data.source), the .bin checked against its sha256."""
    mirror = tmp_path / "team"
    pair = megatron_pair(mirror / "arrays", ours["uint16"][1], "uint16", split=True)
    (mirror / "spm.model").write_bytes(small_model.read_bytes())
    entry = {"path": "arrays/pair.bin", "tokenizer": "spm.model", "source": str(mirror), "sha256": files.sha256(pair)}
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    p = shard_params(repo, entry, pretokenize={"workers": 1})
    (layout.TOKENIZER_DIR).mkdir(parents=True)
    (layout.TOKENIZER_DIR / "spm.model").write_bytes(small_model.read_bytes())
    download.run_stage(p, "02")
    assert sorted(str(path.relative_to(layout.RAW_DIR)) for path in layout.RAW_DIR.rglob("*") if path.is_file()) == [
        "02/arrays/pair.bin",
        "02/arrays/pair.idx",
        "02/spm.model",
    ]
    pretokenize.run_stage(p, "02")
    for suffix in (".bin", ".idx"):
        assert (repo / f"data/tokens/02{suffix}").read_bytes() == ours["uint16"][0].with_suffix(suffix).read_bytes()
    token_files.check_folder(layout.TOKENS_DIR, list(p.data.shards), "train")
    token_files.check_arrays([layout.tokens_path("02")], layout.TOKENIZER_DIR / "spm.model", 1000)
    p = shard_params(repo, {**entry, "sha256": "0" * 64})
    with pytest.raises(PipelineError, match=r"pair\.bin: sha256 mismatch"):
        download.run_stage(p, "02")
