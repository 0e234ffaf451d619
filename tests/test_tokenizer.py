"""SentencePiece training: flags from params, byte-identical models, lossless on every sample document."""

import shutil

import pytest
import sentencepiece as spm

from pipeline import tokenizer
from pipeline.errors import PipelineError
from tests.conftest import LOSSLESS_FLAGS, sample_documents


def test_same_corpus_and_flags_give_a_byte_identical_model(small_model, tmp_path, monkeypatch):
    """Two runs in different directories, as two clones would be: same relative paths, same bytes."""
    for run in ("a", "b"):
        (tmp_path / run / "data").mkdir(parents=True)
        shutil.copy(small_model.parent / "corpus.txt", tmp_path / run / "data" / "corpus.txt")
        monkeypatch.chdir(tmp_path / run)
        tokenizer.train([tokenizer.Path("data/corpus.txt")], tokenizer.Path("data/spm"), LOSSLESS_FLAGS)
    assert (tmp_path / "a/data/spm.model").read_bytes() == (tmp_path / "b/data/spm.model").read_bytes()
    assert (tmp_path / "a/data/spm.vocab").read_bytes() == (tmp_path / "b/data/spm.vocab").read_bytes()
    assert not list((tmp_path / "a/data").glob("*.tmp*"))


@pytest.mark.parametrize("name", ["train/00", "train/01", "val", "test"])
def test_every_sample_document_decodes_back_exactly(small_model, name):
    processor = spm.SentencePieceProcessor(model_file=str(small_model))
    documents = sample_documents(name)
    decoded = [processor.decode(ids) for ids in processor.encode(documents)]
    mismatches = [i for i, (a, b) in enumerate(zip(decoded, documents)) if a != b]
    assert not mismatches and len(documents) > 100


def test_seed_flags_lose_information_the_lossless_defaults_keep(small_model, tmp_path):
    seed_like = {k: v for k, v in LOSSLESS_FLAGS.items()
                 if k not in ("normalization_rule_name", "remove_extra_whitespaces", "byte_fallback")}
    tokenizer.train([small_model.parent / "corpus.txt"], tmp_path / "seed", seed_like)
    text = "def f():\n    return  'é\u00a0x'\t# ok"
    load = lambda path: spm.SentencePieceProcessor(model_file=str(path))  # noqa: E731
    assert tokenizer.roundtrip(load(small_model), [text]) == 1
    assert tokenizer.roundtrip(load(tmp_path / "seed.model"), [text]) == 0


def test_memory_estimate_refuses_a_corpus_too_large_for_the_machine(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"x" * 1000)
    assert tokenizer.check_memory([corpus], 10**9) == 1000 * tokenizer.RAM_PER_TEXT_BYTE
    with pytest.raises(PipelineError, match=r"needs about .* GB of RAM .* lower corpus.max_lines"):
        tokenizer.check_memory([corpus], 1000)
    assert tokenizer.available_memory() > 0


def test_missing_corpus_names_the_file(tmp_path):
    with pytest.raises(PipelineError, match="nope.txt: no such corpus file"):
        tokenizer.train([tmp_path / "nope.txt"], tmp_path / "spm", LOSSLESS_FLAGS)


def test_bad_flag_value_fails_with_sentencepieces_reason_and_leaves_nothing(small_model, tmp_path):
    with pytest.raises(PipelineError, match="SentencePiece training failed"):
        tokenizer.train([small_model.parent / "corpus.txt"], tmp_path / "spm", {**LOSSLESS_FLAGS, "model_type": "nope"})
    assert not list(tmp_path.iterdir())
