"""Pretokenize: arrays that decode back to their documents, in order, separated, never half-written."""

import hashlib

import numpy as np
import pytest
import sentencepiece as spm

from pipeline.config.schema import PretokenizeParams
from pipeline.core.errors import PipelineError
from pipeline.encode import pretokenize, token_files
from pipeline.tokenizer import spm_train
from tests.helpers import LOSSLESS_FLAGS, SAMPLE, doc, sample_documents, write_shard

ONE = PretokenizeParams(workers=1, batch_bytes=50_000)
TWO = PretokenizeParams(workers=2, batch_bytes=50_000)


def documents_from_array(bin_path, model):
    """Cut the array where its index says documents start; check each document ends with the separator."""
    meta = token_files.read_metadata(bin_path)
    ids, docs = token_files.open_tokens(bin_path), token_files.open_documents(bin_path)
    ends = list(docs.starts[1:]) + [len(ids)]
    processor = spm.SentencePieceProcessor(model_file=str(model))
    texts = []
    for start, end in zip(docs.starts, ends):
        assert ids[end - 1] == meta["eos_id"]
        texts.append(processor.decode(ids[start : end - 1].tolist()))
    return texts, docs, meta


def test_sample_shard_decodes_back_to_its_documents(small_model, tmp_path):
    out = tmp_path / "val.bin"
    meta = pretokenize.run([SAMPLE / "val.jsonl.zst"], small_model, out, TWO)
    texts, docs, stored = documents_from_array(out, small_model)
    assert texts == sample_documents("val")
    assert list(docs.n_bytes) == [len(t.encode()) for t in texts]
    assert stored["n_docs"] == len(texts) and stored["n_tokens"] == out.stat().st_size // 2
    assert stored["tokenizer_sha256"] == hashlib.sha256(small_model.read_bytes()).hexdigest()
    names = [stored["groups"][i] for i in docs.set_id]
    assert sorted(set(names)) == ["Django code", "Django docs", "Django translations"]
    assert {name: sum(1 for n in names if n == name) for name in set(names)} == {
        name: counts["docs"] for name, counts in meta["per_group"].items()
    }
    assert np.memmap(out, dtype=np.uint16, mode="r").shape == (stored["n_tokens"],)  # nanoGPT's way


def test_one_and_two_workers_write_identical_files(small_model, tmp_path):
    for name, params in (("one", ONE), ("two", TWO)):
        pretokenize.run([SAMPLE / "test.jsonl.zst"], small_model, tmp_path / name / "test.bin", params)
    for suffix in token_files.SUFFIXES:
        assert (tmp_path / "one" / f"test{suffix}").read_bytes() == (tmp_path / "two" / f"test{suffix}").read_bytes()


def test_every_encoder_path_writes_sentencepieces_ids_and_the_summary_names_it(small_model, tmp_path):
    """The compiled BPE, the word cache over SentencePiece's BPE (a model the compiled BPE refuses) and
    plain encode (a model whose pieces span words) write the same arrays as plain `encode` would."""
    corpus = small_model.parent / "corpus.txt"
    snowman, spans = tmp_path / "snowman", tmp_path / "spans"
    spm_train.train([corpus], snowman / "spm", {**LOSSLESS_FLAGS, "user_defined_symbols": ["☃☃"]})
    spm_train.train([corpus], spans / "spm", {**LOSSLESS_FLAGS, "split_by_whitespace": False})
    texts = sample_documents("test")[:60] + ["☃☃☃ snow☃☃man", "", "日本語"]
    raw = write_shard(tmp_path / "docs.jsonl.zst", [doc(t) for t in texts])
    paths = {}
    for model in (small_model, snowman / "spm.model", spans / "spm.model"):
        out = tmp_path / model.parent.name / "docs.bin"
        meta = pretokenize.run([raw], model, out, TWO)
        eos = meta["eos_id"]
        expected = [i for ids in spm.SentencePieceProcessor(model_file=str(model)).encode(texts) for i in ids + [eos]]
        assert token_files.open_tokens(out).tolist() == expected
        paths[model.parent.name] = meta["encoder"]
    assert paths[small_model.parent.name].startswith("compiled BPE (")
    assert paths["snowman"].startswith("word cache with SentencePiece's BPE (")
    assert "not compiled: the piece '☃☃' holds '☃'" in paths["snowman"]
    assert paths["spans"].startswith("plain SentencePiece encode (the piece")


def test_empty_texts_and_unicode_edge_cases_round_trip(small_model, tmp_path):
    texts = ["", " ", "\n\n", "tab\there", "naïve — 日本語 🙂 \u2028 \x00 end", "x" * 20_000]
    raw = write_shard(tmp_path / "edge.jsonl.zst", [doc(t) for t in texts])
    pretokenize.run([raw], small_model, tmp_path / "edge.bin", TWO)
    assert documents_from_array(tmp_path / "edge.bin", small_model)[0] == texts


def test_bad_record_names_file_and_line_and_leaves_no_output(small_model, tmp_path):
    raw = write_shard(
        tmp_path / "07.jsonl.zst", raw_lines=[b'{"text": "fine"}'] * 5 + [b'{"text": 1}'] + [b'{"text": "ok"}']
    )
    with pytest.raises(PipelineError, match=r"07\.jsonl\.zst: line 6: no string 'text'.*on_bad_record: skip"):
        pretokenize.run([raw], small_model, tmp_path / "out" / "07.bin", TWO)
    assert not list((tmp_path / "out").iterdir())
    meta = pretokenize.run(
        [raw], small_model, tmp_path / "out" / "07.bin", PretokenizeParams(workers=2), on_bad_record="skip"
    )
    assert meta["n_docs"] == 6 and meta["bad_records"] == {"no string 'text'": 1}


def test_truncated_shard_names_file_and_leaves_no_array(small_model, tmp_path):
    raw = tmp_path / "07.jsonl.zst"
    raw.write_bytes((SAMPLE / "val.jsonl.zst").read_bytes()[:-5000])
    with pytest.raises(PipelineError, match=r"07\.jsonl\.zst: truncated"):
        pretokenize.run([raw], small_model, tmp_path / "out" / "07.bin", TWO)
    assert not list((tmp_path / "out").iterdir())


def test_vocabulary_too_large_for_the_dtype_is_refused():
    with pytest.raises(PipelineError, match="70,000 pieces do not fit uint16.*pretokenize.dtype: uint32"):
        token_files.check_dtype_fits(70_000, "uint16", "spm.model")
    token_files.check_dtype_fits(65_536, "uint16", "spm.model")


def test_tokenizer_without_a_separator_is_refused_before_any_work(tmp_path, small_model):
    from pipeline.tokenizer import spm_train
    from tests.helpers import LOSSLESS_FLAGS

    spm_train.train([small_model.parent / "corpus.txt"], tmp_path / "noeos", {**LOSSLESS_FLAGS, "eos_id": -1})
    with pytest.raises(PipelineError, match="no eos piece .* bleed"):
        pretokenize.run([SAMPLE / "val.jsonl.zst"], tmp_path / "noeos.model", tmp_path / "val.bin", ONE)
    assert not (tmp_path / "val.bin").exists()


def test_damaged_array_is_detected_against_its_metadata(small_model, tmp_path):
    out = tmp_path / "test.bin"
    pretokenize.run([SAMPLE / "test.jsonl.zst"], small_model, out, ONE)
    with open(out, "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(PipelineError, match="metadata says"):
        token_files.open_tokens(out)
