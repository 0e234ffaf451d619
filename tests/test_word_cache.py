"""The word-cache encoder gives exactly SentencePiece's ids, on each of its paths (compiled BPE, the
word cache over SentencePiece's BPE, plain encode): proved on the sample and on generated text,
word by word and text by text, under several trainer flags."""

from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st
from sentencepiece import sentencepiece_model_pb2

from pipeline.encode import compiled_bpe, encoder
from pipeline.encode.encoder import WordCacheEncoder
from pipeline.tokenizer import pieces, spm_train
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
# Words without spaces: mixed scripts, emoji, combining marks, digits, characters outside any
# vocabulary, literal ▁, and long repeats (BPE's merge order matters most on those)
WORD_PART = st.one_of(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Zs"]),
    st.sampled_from(["e\u0301", "n\u0303", "1\u20e3", "🇫🇷", "👩‍💻", "▁", "\U0010fffd", "\ue000", "ﬁ", "Ⅻ"]),
    st.sampled_from(["the", "ing", "tion", "日本語", "Ελλη", "داده", "0123456789", "3.14159", "<br>", "def"]),
    st.tuples(st.sampled_from(["a", "aa", "ab", "=", "-", "0", "é", "日", "🙂", " ▁"]), st.integers(2, 200)).map(
        lambda repeat: repeat[0] * repeat[1]
    ),
)
WORD = st.lists(WORD_PART, min_size=1, max_size=6).map("".join).map(lambda word: word.replace(" ", ""))

MODELS = ["small_model", "seed_model", "bytes_model", "unknowns_model", "user_defined_model", "unused_model"]


@pytest.fixture(scope="module")
def corpus(small_model):
    return small_model.parent / "corpus.txt"


def train(corpus, out_dir, flags):
    spm_train.train([corpus], out_dir / "spm", flags)
    return out_dir / "spm.model"


@pytest.fixture(scope="module")
def seed_model(corpus, tmp_path_factory):
    """The seed's flags: nmt_nfkc, whitespace collapsed, no byte fallback ([UNK] for rare characters)."""
    return train(corpus, tmp_path_factory.mktemp("seed"), SEED_FLAGS)


@pytest.fixture(scope="module")
def bytes_model(corpus, tmp_path_factory):
    """Lossless, so small (and its alphabet cut to 98% coverage) that byte fallback is everywhere."""
    flags = {**LOSSLESS_FLAGS, "vocab_size": 400, "character_coverage": 0.98}
    return train(corpus, tmp_path_factory.mktemp("bytes"), flags)


@pytest.fixture(scope="module")
def unknowns_model(corpus, tmp_path_factory):
    """The seed's flags on a small vocabulary and alphabet: [UNK] everywhere."""
    flags = {**SEED_FLAGS, "vocab_size": 150, "character_coverage": 0.98}
    return train(corpus, tmp_path_factory.mktemp("unknowns"), flags)


@pytest.fixture(scope="module")
def user_defined_model(corpus, tmp_path_factory):
    """User-defined pieces are matched whole (the longest first) and never merged further."""
    flags = {**LOSSLESS_FLAGS, "user_defined_symbols": ["<br>", "ing", "the", "th", "▁def", "12"]}
    return train(corpus, tmp_path_factory.mktemp("user"), flags)


def edited(model: Path, out: Path, change) -> Path:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.read_bytes())
    change(proto)
    out.write_bytes(proto.SerializeToString())
    return out


def splits(proto) -> dict[str, int]:
    """How many ways each mergeable piece splits into two mergeable pieces."""
    ids = {p.piece: i for i, p in enumerate(proto.pieces) if p.type in pieces.MERGEABLE}
    return {name: len(pieces.two_piece_splits(name, ids)) for name in ids}


@pytest.fixture(scope="module")
def unused_model(small_model, tmp_path_factory):
    """Every fifth piece with exactly one way to split it marked unused: SentencePiece still builds it
    while merging, then splits it back into the two pieces that made it."""

    def mark(proto):
        one_way = [name for name, n in splits(proto).items() if n == 1 and len(name) > 2]
        for piece in proto.pieces:
            if piece.piece in one_way[::5]:
                piece.type = pieces.SentencePiece.UNUSED

    return edited(small_model, tmp_path_factory.mktemp("unused") / "spm.model", mark)


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


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "sentencepiece-bpe"])
@pytest.mark.parametrize("name", ["train/00", "train/01", "val", "test"])
def test_every_sample_document_gets_sentencepieces_ids(small_model, name, compiled):
    encoder = assert_same_ids(small_model, sample_documents(name), compiled=compiled)
    assert encoder.fallback_reason is None and encoder.misses < encoder.words
    assert (encoder.compiled is not None) == compiled
    assert encoder.describe().startswith("compiled BPE" if compiled else "word cache with SentencePiece's BPE")


@pytest.mark.parametrize("model", ["small_model", "seed_model", "bytes_model"])
def test_every_word_of_the_sample_alone_gets_sentencepieces_ids(model, request):
    model = request.getfixturevalue(model)
    shards = ("train/00", "train/01", "val", "test")
    words = sorted({word for name in shards for text in sample_documents(name) for word in text.split()})
    encoder = WordCacheEncoder(model)
    assert encoder.compiled is not None
    ids, counts = encoder.encode_documents(words)
    expected = spm.SentencePieceProcessor(model_file=str(model)).encode(words)
    assert counts.tolist() == list(map(len, expected))
    assert ids.tolist() == [i for word in expected for i in word]


GENERATED = {"words": st.lists(WORD, min_size=1, max_size=10), "texts": st.lists(TEXT, min_size=1, max_size=8)}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("unit", list(GENERATED))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_generated_words_and_texts_get_sentencepieces_ids(model, unit, request, data):
    """Word by word (each generated word a text of its own) and text by text."""
    encoder = assert_same_ids(request.getfixturevalue(model), data.draw(GENERATED[unit], label=unit), batch=3)
    assert encoder.compiled is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=8))
def test_generated_text_gets_sentencepieces_ids_through_sentencepieces_bpe(seed_model, texts):
    encoder = assert_same_ids(seed_model, texts, batch=3, compiled=False)
    assert encoder.fallback_reason is None and not encoder.plain_spaces


def test_the_trained_models_exercise_what_they_are_for(bytes_model, unknowns_model, user_defined_model, unused_model):
    """The fixtures do what their names say (a test of the tests: else the properties above prove less)."""
    text = "\n".join(sample_documents("test")[:200])
    bytes_ids = spm.SentencePieceProcessor(model_file=str(bytes_model)).encode(text, out_type=str)
    assert sum(piece.startswith("<0x") for piece in bytes_ids) > 100
    unknown = spm.SentencePieceProcessor(model_file=str(unknowns_model))
    assert unknown.encode(text).count(unknown.unk_id()) > 100
    user = spm.SentencePieceProcessor(model_file=str(user_defined_model))
    assert "ing" in user.encode("thing going", out_type=str)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(unused_model.read_bytes())
    unused = {p.piece for p in proto.pieces if p.type == pieces.SentencePiece.UNUSED}
    encoded = spm.SentencePieceProcessor(model_file=str(unused_model)).encode(text, out_type=str)
    assert len(unused) > 10 and not unused & set(encoded)


def test_a_cache_that_fills_up_is_cleared_and_stays_exact(small_model):
    encoder = assert_same_ids(small_model, sample_documents("test"), max_entries=500)
    assert encoder.compiled.cache[-1][compiled_bpe.CLEARS] > 0
    python_cache = assert_same_ids(small_model, sample_documents("test"), max_entries=500, compiled=False)
    assert len(python_cache.cache) <= 500 + 17 * 2000  # the bound, plus at most one batch's new words


def test_words_longer_than_the_work_array_are_encoded_alone_and_the_array_shrinks_back(small_model):
    rng = np.random.default_rng(0)
    long_word = "".join(rng.choice(list("abcdefghij0123456789+/="), 20_000))
    encoder = assert_same_ids(small_model, ["short words " + long_word + " after", "a" * 5000, "then short"])
    assert encoder.compiled.work.shape[1] == compiled_bpe.work_columns(compiled_bpe.MAX_CACHED_CHARS)


def test_models_whose_pieces_span_words_fall_back_to_plain_encoding_and_say_why(small_model, tmp_path):
    spans = train(small_model.parent / "corpus.txt", tmp_path, {**LOSSLESS_FLAGS, "split_by_whitespace": False})
    encoder = assert_same_ids(spans, sample_documents("test")[:50])
    assert "holds ▁ past its start" in encoder.fallback_reason
    assert encoder.describe().startswith("plain SentencePiece encode")


def test_an_unused_piece_that_splits_two_ways_falls_back_to_plain_encoding(small_model, tmp_path):
    """SentencePiece splits such a piece back the way its last candidate anywhere in the text was made,
    so a word's ids depend on other words."""

    def mark(proto):
        two_ways = next(name for name, n in splits(proto).items() if n > 1)
        next(p for p in proto.pieces if p.piece == two_ways).type = pieces.SentencePiece.UNUSED

    model = edited(small_model, tmp_path / "spm.model", mark)
    encoder = assert_same_ids(model, sample_documents("test")[:50])
    assert "splits back two ways" in encoder.fallback_reason


def test_a_model_the_compiled_bpe_cannot_reproduce_keeps_sentencepieces_bpe_and_says_why(corpus, tmp_path):
    """A user-defined piece of characters that are no pieces themselves: outside what compiled_bpe proves."""
    model = train(corpus, tmp_path, {**LOSSLESS_FLAGS, "user_defined_symbols": ["☃☃"]})
    encoder = assert_same_ids(model, sample_documents("test")[:50] + ["☃☃☃ ☃ snow☃☃man"])
    assert encoder.compiled is None and encoder.bpe_only is not None
    assert "'☃☃' holds '☃', which is no piece of its own" in encoder.describe()


@settings(max_examples=100, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=8), st.integers(1, 12), st.booleans(), st.booleans())
def test_long_texts_encoded_a_slice_of_words_at_a_time_keep_the_same_ids(
    small_model, seed_model, texts, segment_chars, seed_flags, compiled
):
    """A text of tens of MB is cut between words to bound memory; tiny slices here cut everywhere."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder, "SEGMENT_CHARS", segment_chars)
        assert_same_ids(seed_model if seed_flags else small_model, texts, batch=3, compiled=compiled)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "sentencepiece-bpe"])
def test_a_long_sample_document_is_cut_into_slices_with_the_same_ids(small_model, monkeypatch, compiled):
    monkeypatch.setattr(encoder, "SEGMENT_CHARS", 1000)
    assert_same_ids(small_model, ["\n".join(sample_documents("val")[:200])], compiled=compiled)


def test_documents_get_their_separator_and_counts_on_every_path(small_model, tmp_path):
    texts = sample_documents("test")[:40] + ["", " ", "日本語"]
    spans = train(small_model.parent / "corpus.txt", tmp_path, {**LOSSLESS_FLAGS, "split_by_whitespace": False})
    for model, compiled in ((small_model, True), (small_model, False), (spans, True)):
        expected = spm.SentencePieceProcessor(model_file=str(model)).encode(texts)
        ids, counts = WordCacheEncoder(model, compiled=compiled).encode_documents(texts, eos=2)
        assert ids.tolist() == [i for text in expected for i in text + [2]]
        assert counts.tolist() == [len(text) + 1 for text in expected]
