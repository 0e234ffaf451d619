"""SentencePiece training: flags from params, byte-identical models, lossless on every sample document."""

import shutil

import pytest
import sentencepiece as spm

from pipeline.core import machine
from pipeline.core.errors import PipelineError
from pipeline.tokenizer import spm_train, train
from tests.helpers import LOSSLESS_FLAGS, sample_documents


def test_same_corpus_and_flags_give_a_byte_identical_model(small_model, tmp_path, monkeypatch):
    """Two runs in different directories, as two clones would be: same relative paths, same bytes."""
    for run in ("a", "b"):
        (tmp_path / run / "data").mkdir(parents=True)
        shutil.copy(small_model.parent / "corpus.txt", tmp_path / run / "data" / "corpus.txt")
        monkeypatch.chdir(tmp_path / run)
        spm_train.train([spm_train.Path("data/corpus.txt")], spm_train.Path("data/spm"), LOSSLESS_FLAGS)
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
    seed_like = {
        k: v
        for k, v in LOSSLESS_FLAGS.items()
        if k not in ("normalization_rule_name", "remove_extra_whitespaces", "byte_fallback")
    }
    spm_train.train([small_model.parent / "corpus.txt"], tmp_path / "seed", seed_like)
    text = "def f():\n    return  'é\u00a0x'\t# ok"
    load = lambda path: spm.SentencePieceProcessor(model_file=str(path))  # noqa: E731
    assert train.roundtrip(load(small_model), [text]) == 1
    assert train.roundtrip(load(tmp_path / "seed.model"), [text]) == 0


def test_memory_estimate_refuses_a_corpus_too_large_for_the_machine(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"x" * 1000)
    assert spm_train.check_memory([corpus], 10**9) == 1000 * spm_train.RAM_PER_TEXT_BYTE
    with pytest.raises(PipelineError, match=r"needs about .* GB of RAM .* lower corpus.max_lines"):
        spm_train.check_memory([corpus], 1000)


def test_available_memory_is_capped_by_the_cgroup_limit_a_container_or_batch_job_sets(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:    8000000 kB\n")
    assert machine.available_memory(meminfo, tmp_path / "no-cgroup") == 8_000_000 * 1024
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("2000000000\n")
    (v2 / "memory.current").write_text("500000000\n")
    assert machine.available_memory(meminfo, v2) == 1_500_000_000  # the job's headroom, not the machine's
    (v2 / "memory.max").write_text("max\n")
    assert machine.available_memory(meminfo, v2) == 8_000_000 * 1024
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("1000000000\n")
    (v1 / "memory.usage_in_bytes").write_text("400000000\n")
    assert machine.available_memory(meminfo, v1.parent) == 600_000_000


def test_missing_corpus_names_the_file(tmp_path):
    with pytest.raises(PipelineError, match="nope.txt: no such corpus file"):
        spm_train.train([tmp_path / "nope.txt"], tmp_path / "spm", LOSSLESS_FLAGS)


def test_bad_flag_value_fails_with_sentencepieces_reason_and_leaves_nothing(small_model, tmp_path):
    with pytest.raises(PipelineError, match="SentencePiece training failed"):
        spm_train.train([small_model.parent / "corpus.txt"], tmp_path / "spm", {**LOSSLESS_FLAGS, "model_type": "nope"})
    assert [path.name for path in tmp_path.iterdir()] == ["spm.log"]  # SentencePiece's log, for the reason
