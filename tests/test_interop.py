"""Our arrays in other trainers' own readers: Megatron's MMIDIDX index byte for byte, read in place.

The golden bytes and our own reader run everywhere; each real reader runs where its package is
installed (megatron-core and datatrove: `make install`, the interop extra) and skips, saying why,
where it is not. The settings blocks of docs/interop.md are read from the page itself."""

import argparse
import os
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config.layout import keys as layout_keys
from pipeline.config.load import load_params
from pipeline.config.schema import PretokenizeParams
from pipeline.core.errors import PipelineError
from pipeline.encode import megatron_index, pretokenize, token_files
from tests.helpers import REPO, SAMPLE

INTEROP = REPO / "docs" / "interop.md"
MEGATRON = "megatron-core is not installed (the interop extra of `make install` brings it)"
DATATROVE = "datatrove is not installed (the interop extra of `make install` brings it)"
OLMO = (
    "OLMo-core is not installed: it pins filelock<4 and, through cached-path, an older huggingface_hub "
    "than this project's transformers needs (docs/interop.md)"
)
MEGATRON_DTYPES = {"uint16": np.uint16, "uint32": np.int32}  # what Megatron writes for each (no uint32 code)

# Three documents of 3, 1 and 4 tokens (separator included), as Megatron's _IndexWriter lays them out.
GOLDEN_INDEX = {
    "uint16": bytes.fromhex(
        "4d4d4944494458 0000"  # magic MMIDIDX\0\0
        "0100000000000000"  # version 1
        "08"  # dtype code 8: uint16
        "0300000000000000"  # 3 sequences
        "0400000000000000"  # 4 document indices
        "03000000 01000000 04000000"  # int32 lengths
        "0000000000000000 0600000000000000 0800000000000000"  # int64 byte pointers: 0, 3x2, 4x2
        "0000000000000000 0100000000000000 0200000000000000 0300000000000000"  # document indices
    ),
    "uint32": bytes.fromhex(
        "4d4d4944494458 0000 0100000000000000"
        "04"  # dtype code 4: int32, the same bytes as uint32 below 2**31
        "0300000000000000 0400000000000000 03000000 01000000 04000000"
        "0000000000000000 0c00000000000000 1000000000000000"  # byte pointers: 0, 3x4, 4x4
        "0000000000000000 0100000000000000 0200000000000000 0300000000000000"
    ),
}
GOLDEN_DOCS = bytes.fromhex(
    "0900000000000000 00000000"  # 9 bytes, group 0 ("a")
    "0000000000000000 00000000"  # an empty document: only its separator
    "0b00000000000000 01000000"  # 11 bytes, group 1 ("b")
)


def write_three_documents(directory: Path, dtype: str) -> Path:
    path = directory / f"{dtype}.bin"
    tokens = np.array([5, 6, 2, 2, 7, 8, 9, 2], dtype=token_files.DTYPES[dtype])
    with token_files.TokenWriter(path, dtype) as writer:
        writer.add(tokens[:4], np.array([3, 1]), np.array([9, 0]), ["a", "a"])
        writer.add(tokens[4:], np.array([4]), np.array([11]), ["b"])
    return path


@pytest.mark.parametrize("chunk", [2, megatron_index.CHUNK])
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_the_index_is_megatrons_mmidx_byte_for_byte(tmp_path, monkeypatch, dtype, chunk):
    """Pointers and document indices are written a chunk at a time: a chunk of 2 crosses boundaries."""
    monkeypatch.setattr(megatron_index, "CHUNK", chunk)
    path = write_three_documents(tmp_path, dtype)
    assert token_files.index_path(path).read_bytes() == GOLDEN_INDEX[dtype]
    assert token_files.docs_path(path).read_bytes() == GOLDEN_DOCS
    assert path.read_bytes() == np.array([5, 6, 2, 2, 7, 8, 9, 2], dtype=f"<u{2 if dtype == 'uint16' else 4}").tobytes()


def test_our_reader_finds_each_documents_start_and_facts(tmp_path):
    path = write_three_documents(tmp_path, "uint16")
    (tmp_path / "uint16.json").write_text(f'{{"format": "{token_files.FORMAT}", "dtype": "uint16", "n_docs": 3}}')
    docs = token_files.open_documents(path)
    assert docs.starts.tolist() == [0, 3, 4] and docs.n_bytes.tolist() == [9, 0, 11]
    assert docs.set_id.tolist() == [0, 0, 1]


def test_a_damaged_index_is_refused_naming_the_file_and_byte(tmp_path):
    path = token_files.index_path(write_three_documents(tmp_path, "uint16"))
    data = path.read_bytes()
    path.write_bytes(b"MMIDIDY" + data[7:])
    with pytest.raises(PipelineError, match=r"uint16\.idx: byte 0: .* not Megatron's MMIDIDX magic"):
        megatron_index.read(path)
    path.write_bytes(data[:17] + b"\x09" + data[18:])
    with pytest.raises(PipelineError, match=r"uint16\.idx: byte 17: dtype code 9 is none of Megatron's"):
        megatron_index.read(path)
    path.write_bytes(data[:-8])
    with pytest.raises(PipelineError, match=r"uint16\.idx: 94 bytes, but its header .* makes 102"):
        megatron_index.read(path)


def test_arrays_of_an_earlier_format_are_refused_with_the_command_that_rewrites_them(tmp_path):
    (tmp_path / "val.json").write_text('{"format": "pile-gpt tokens v2", "dtype": "uint16"}')
    with pytest.raises(PipelineError, match=r"val\.json: format 'pile-gpt tokens v2'.*rerun `dvc repro pretokenize`"):
        token_files.open_tokens(tmp_path / "val.bin")


def test_a_vocabulary_of_2_31_pieces_is_refused_in_uint32_by_name():
    with pytest.raises(PipelineError, match=r"spm\.model: 2,147,483,649 pieces do not fit uint32 .*int32"):
        token_files.check_dtype_fits(2**31 + 1, "uint32", "spm.model")
    token_files.check_dtype_fits(2**31, "uint32", "spm.model")


@pytest.fixture(scope="module")
def arrays(small_model, tmp_path_factory) -> dict[str, Path]:
    """The sample's val shard as pretokenize writes it, in uint16 and in uint32."""
    work = tmp_path_factory.mktemp("interop")
    for dtype in ("uint16", "uint32"):
        params = PretokenizeParams(workers=1, dtype=dtype, batch_bytes=1 << 20)
        pretokenize.run([SAMPLE / "val.jsonl.zst"], small_model, work / dtype / "val.bin", params)
    return {dtype: work / dtype / "val.bin" for dtype in ("uint16", "uint32")}


def documents(bin_path: Path) -> list[np.ndarray]:
    """Each document of an array, its separator included, cut where our reader says it starts."""
    ids = token_files.open_tokens(bin_path)
    bounds = [*token_files.open_documents(bin_path).starts, len(ids)]
    return [np.asarray(ids[a:b]) for a, b in zip(bounds, bounds[1:])]


def megatron(module: str):
    pytest.importorskip("megatron.core", reason=MEGATRON)
    with warnings.catch_warnings():  # no Transformer Engine or Apex on a CPU machine: harmless, said at import
        warnings.simplefilter("ignore")
        return __import__(f"megatron.core.{module}", fromlist=["_"])


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_megatron_core_reads_every_document_of_our_array_equal_to_ours(arrays, dtype):
    indexed = megatron("datasets.indexed_dataset")
    ours = documents(arrays[dtype])
    dataset = indexed.IndexedDataset(str(arrays[dtype].with_suffix("")))
    assert dataset.index.dtype == MEGATRON_DTYPES[dtype] and len(dataset) == len(ours) == 138
    assert np.array_equal(dataset.document_indices, np.arange(len(ours) + 1))
    for i, document in enumerate(ours):
        assert np.array_equal(dataset[i], document), f"document {i}"
    assert np.array_equal(dataset.get(7, offset=2, length=5), ours[7][2:7])


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_megatron_cores_own_writer_makes_our_bytes_from_our_documents(arrays, dtype, tmp_path):
    indexed = megatron("datasets.indexed_dataset")
    builder = indexed.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=MEGATRON_DTYPES[dtype])
    for document in documents(arrays[dtype]):
        builder.add_document(document, [len(document)])
    builder.finalize(str(tmp_path / "theirs.idx"))
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"theirs{suffix}").read_bytes() == arrays[dtype].with_suffix(suffix).read_bytes(), suffix


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_datatroves_megatron_writer_makes_our_bytes_from_our_documents(arrays, dtype, tmp_path):
    pytest.importorskip("datatrove", reason=DATATROVE)
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronTokenizedFile

    writer = MegatronTokenizedFile(str(tmp_path), "theirs", token_size=2 if dtype == "uint16" else 4)
    for document in documents(arrays[dtype]):
        writer.write(document.tolist())
    writer.close()
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"theirs{suffix}").read_bytes() == arrays[dtype].with_suffix(suffix).read_bytes(), suffix


def settings(name: str) -> str:
    """The code block under `<!-- settings: NAME -->` in docs/interop.md."""
    found = re.search(rf"<!-- settings: {name} -->\n```[a-z]*\n(.*?)```", INTEROP.read_text(), re.S)
    assert found, f"docs/interop.md has no settings block {name!r}"
    return found.group(1)


@pytest.fixture
def layout(arrays, small_model, tmp_path, monkeypatch) -> Path:
    """A folder laid out as the sample's repository after pretokenize (every key holds the val array),
    made the working directory, since the settings name paths relative to the repository."""
    tokens = tmp_path / "data" / "tokens"
    tokens.mkdir(parents=True)
    for key in ("00", "01", "val", "test"):
        for suffix in token_files.SUFFIXES:
            os.symlink(arrays["uint16"].with_suffix(suffix), tokens / f"{key}{suffix}")
    (tmp_path / "data" / "tokenizer").mkdir()
    os.symlink(small_model, tmp_path / "data" / "tokenizer" / "spm.model")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def flags(block: str) -> dict[str, list[str]]:
    """`--flag value ...` lines as {flag: values}."""
    words = shlex.split(block, comments=True)
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for word in words:
        if word.startswith("--"):
            current = out.setdefault(word[2:].replace("-", "_"), [])
        else:
            current.append(word)
    return out


def test_the_documented_megatron_settings_match_the_sample_params():
    p, given = load_params(REPO / "params.yaml"), flags(settings("megatron"))
    train = layout_keys(p.data, "train")
    assert given["train_data_path"] == [f"data/tokens/{key}" for key in train]
    assert given["valid_data_path"] == ["data/tokens/val"] and given["test_data_path"] == ["data/tokens/test"]
    assert given["seq_length"] == [str(p.model.block_size)] and given["tokenizer_model"] == ["data/tokenizer/spm.model"]


def test_megatron_reads_the_documented_settings_as_whole_documents_in_its_own_order(layout, arrays, small_model):
    """The settings block through megatron-core's own parsing, tokenizer and GPTDataset: every sample is
    our documents, whole and separated, cut across their boundaries, in an order that is not ours."""
    utils, gpt = megatron("datasets.utils"), megatron("datasets.gpt_dataset")
    builder = megatron("datasets.blended_megatron_dataset_builder")
    tokenizers = megatron("tokenizers.text.utils.build_tokenizer")
    given = flags(settings("megatron"))
    tokenizer = tokenizers.build_tokenizer(
        argparse.Namespace(
            tokenizer_type=given["tokenizer_type"][0],
            tokenizer_model=given["tokenizer_model"][0],
            tokenizer_sentencepiece_legacy=False,
            tokenizer_special_tokens=None,
            tokenizer_metadata=None,
        )
    )
    meta = token_files.read_metadata(arrays["uint16"])
    assert tokenizer.vocab_size == meta["vocab_size"] and tokenizer.eod == meta["eos_id"]
    config = gpt.GPTDatasetConfig(
        random_seed=1234,
        sequence_length=int(given["seq_length"][0]),
        blend_per_split=[
            utils.get_blend_from_list(given[f"{split}_data_path"]) for split in ("train", "valid", "test")
        ],
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=given["data_cache_path"][0],
    )
    torch.distributed.init_process_group("gloo", init_method=f"file://{layout}/group", rank=0, world_size=1)
    try:  # Megatron-LM runs with a process group: rank 0 writes the index cache
        build = builder.BlendedMegatronDatasetBuilder(gpt.GPTDataset, [64, 8, 8], lambda: True, config)
        train, valid, test = build.build()
    finally:
        torch.distributed.destroy_process_group()
    assert (layout / given["data_cache_path"][0]).is_dir() and not list((layout / "data" / "tokens").glob("*/"))
    assert len(train) >= 64 and valid is not None and test is not None
    ours = documents(arrays["uint16"])
    whole = {tuple(document) for document in ours}
    stream = np.concatenate(ours)
    eos = meta["eos_id"]
    for k in range(64):
        sample = train[k]
        tokens = np.append(sample["tokens"].numpy(), sample["labels"].numpy()[-1])
        pieces = np.split(tokens, np.flatnonzero(tokens == eos) + 1)
        if len(pieces) == 1:  # within one document
            assert any(contains(d, tokens) for d in ours), f"sample {k}: no run of one document of ours"
            continue
        for piece in pieces[1:-1]:  # between two separators: a whole document of ours
            assert tuple(piece) in whole, f"sample {k}: a piece that is none of our documents"
        assert any(tuple(d[len(d) - len(pieces[0]) :]) == tuple(pieces[0]) for d in ours)  # a document's end
        assert any(tuple(d[: len(pieces[-1])]) == tuple(pieces[-1]) for d in ours)  # a document's start
    first = np.append(train[0]["tokens"].numpy(), train[0]["labels"].numpy()[-1])
    assert not np.array_equal(first, stream[: len(first)]), "Megatron kept the arrays' order"


def contains(document: np.ndarray, run: np.ndarray) -> bool:
    """Whether `run` is a run of consecutive tokens of `document`."""
    data, needle, at = document.tobytes(), run.astype(document.dtype).tobytes(), -1
    while (at := data.find(needle, at + 1)) >= 0:
        if at % document.itemsize == 0:
            return True
    return False


def test_nanogpts_memmap_line_reads_one_shard(layout, arrays):
    scope: dict = {}
    exec(settings("nanogpt"), scope)
    assert np.array_equal(scope["data"], token_files.open_tokens(arrays["uint16"]))


def test_olmo_core_reads_fixed_windows_of_our_bin(layout, arrays):
    pytest.importorskip("olmo_core", reason=OLMO)
    scope: dict = {}
    exec(settings("olmo-core"), scope)
    dataset, length = scope["dataset"], 256
    stream = np.concatenate([token_files.open_tokens(arrays["uint16"])] * 2)  # 00 and 01: the same array here
    per_file = len(token_files.open_tokens(arrays["uint16"])) // length
    assert len(dataset) == 2 * per_file
    for i in (0, 1, per_file - 1, per_file, 2 * per_file - 1):
        f, w = divmod(i, per_file)
        start = f * len(stream) // 2 + w * length
        assert np.array_equal(np.asarray(dataset[i]["input_ids"]), stream[start : start + length]), i
