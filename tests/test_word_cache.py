"""The word-cache encoder gives exactly SentencePiece's ids: proved on the sample and on generated text."""

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import tokenizer, word_cache
from pipeline.word_cache import WordCacheEncoder
from tests.helpers import LOSSLESS_FLAGS, sample_documents

SEED_FLAGS = {
    k: v
    for k, v in LOSSLESS_FLAGS.items()
    if k not in ("normalization_rule_name", "remove_extra_whitespaces", "byte_fallback")
}
TEXT = st.lists(
    st.one_of(
        st.sampled_from(list(" \t\n\r\u00a0\u3000\u2028\x0b\x00▁") + ["  ", "\n\n", "    "]),
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
        st.sampled_from(
            ["def", "return", "the", "naïve", "日本語", "Ελληνικά", "العربية", "🙂", "👩‍💻", "12345", "3.14"]
        ),
    ),
    max_size=30,
).map("".join)


@pytest.fixture(scope="module")
def seed_model(small_model, tmp_path_factory):
    """The seed's flags: nmt_nfkc, whitespace collapsed, no byte fallback ([UNK] for rare characters)."""
    out = tmp_path_factory.mktemp("seed") / "spm"
    tokenizer.train([small_model.parent / "corpus.txt"], out, SEED_FLAGS)
    return out.with_suffix(".model")


def assert_same_ids(model, texts, batch=17, **kwargs):
    plain = spm.SentencePieceProcessor(model_file=str(model))
    encoder = WordCacheEncoder(model, **kwargs)
    fast = [
        np.frombuffer(ids, dtype="<u2").tolist()
        for i in range(0, len(texts), batch)
        for ids in encoder.encode(texts[i : i + batch])
    ]
    assert fast == plain.encode(texts)
    return encoder


@pytest.mark.parametrize("name", ["train/00", "train/01", "val", "test"])
def test_every_sample_document_gets_sentencepieces_ids(small_model, name):
    encoder = assert_same_ids(small_model, sample_documents(name))
    assert encoder.fallback_reason is None and encoder.misses < encoder.words


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=8))
def test_generated_text_gets_sentencepieces_ids_under_lossless_flags(small_model, texts):
    assert_same_ids(small_model, texts, batch=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=8))
def test_generated_text_gets_sentencepieces_ids_under_the_seed_flags(seed_model, texts):
    encoder = assert_same_ids(seed_model, texts, batch=3)
    assert encoder.fallback_reason is None and not encoder.plain_spaces


def test_a_cache_that_fills_up_is_cleared_and_stays_exact(small_model):
    encoder = assert_same_ids(small_model, sample_documents("test"), max_entries=500)
    assert len(encoder.cache) <= 500 + 17 * 2000  # the bound, plus at most one batch's new words


def test_models_whose_pieces_span_words_fall_back_to_plain_encoding_and_say_why(small_model, tmp_path):
    tokenizer.train(
        [small_model.parent / "corpus.txt"], tmp_path / "spans", {**LOSSLESS_FLAGS, "split_by_whitespace": False}
    )
    encoder = assert_same_ids(tmp_path / "spans.model", sample_documents("test")[:50])
    assert "holds ▁ past its start" in encoder.fallback_reason
    assert encoder.describe().startswith("plain SentencePiece encode")


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=8), st.integers(1, 12), st.booleans())
def test_long_texts_encoded_a_slice_of_words_at_a_time_keep_the_same_ids(
    small_model, seed_model, texts, segment_chars, seed_flags
):
    """A text of tens of MB is cut between words to bound memory; tiny slices here cut everywhere."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(word_cache, "SEGMENT_CHARS", segment_chars)
        assert_same_ids(seed_model if seed_flags else small_model, texts, batch=3)


def test_a_long_sample_document_is_cut_into_slices_with_the_same_ids(small_model, monkeypatch):
    monkeypatch.setattr(word_cache, "SEGMENT_CHARS", 1000)
    assert_same_ids(small_model, ["\n".join(sample_documents("val")[:200])])
