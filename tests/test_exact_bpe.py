"""The exact trainer against SentencePiece's own: the same model file, flag by flag, and its refusals.

Every comparison trains both on the same lines: spm_train (SentencePiece 0.2.3's Python API) on
the text, the exact trainer on word-count tables of it. The whole ModelProto must be equal (the
pieces in order, their scores and types, the specs; spm records its input paths, which are
cleared) and so must the .vocab bytes.
"""

import random
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from pipeline.config.load import load_params
from pipeline.core.errors import PipelineError
from pipeline.tokenizer import (
    bpe_kernel,
    exact_bpe,
    spm_spec,
    spm_train_command,
    table_merge,
    unicode_scripts,
    word_counts,
    word_table,
)
from pipeline.tokenizer.corpus import split_line
from tests.helpers import LOSSLESS_FLAGS, REPO, child_env, sample_documents

ORIGINAL_FLAGS = {  # the original command's (presets/pile-original.yaml), SentencePiece's defaults otherwise
    "model_type": "bpe",
    "vocab_size": 1500,
    "pad_id": 0,
    "unk_id": 1,
    "bos_id": -1,
    "eos_id": -1,
    "pad_piece": "[PAD]",
    "unk_piece": "[UNK]",
    "input_sentence_size": 0,
    "num_threads": 2,
}
TRICKY_LINES = [  # what spm_train's loading and normalization treat specially, each a few times
    b"plain line with  double  spaces   ",
    b"   leading spaces and a trailing tab\t",
    b"tab\tinside\tthe line and \xe2\x96\x81 a literal marker",
    b"a line holding U+2585 \xe2\x96\x85 is dropped by spm_train",
    b"",
    b"y" * 5000,  # over max_sentence_length
    b"malformed utf-8 \xff\xfe here \xe2\x82 cut short",
    "fullwidth \uff28\uff45\uff4c\uff4c\uff4f \uff11\uff12\uff13 and a carriage return\r".encode(),
    b"meta pieces in text: [PAD] [UNK] <|endoftext|> <0x41> <s> </s> <unk> <tag> <ctl>",
    "こんにちは世界ーカタカナ 日本語のテキスト 12345 ١٢٣ ১২৩ e\u0301 a\u0300".encode(),
    "zero width\u200b joiner\u200d soft\u00adhyphen nbsp\u00a0here \u3000ideographic".encode(),
    "controls \x01\x02, unit separator \x1f and nul \x00 here; emoji 😀👍🏽 𝐁𝐨𝐥𝐝".encode(),
]


def sized(unit: str, size: int, last: str = "") -> bytes:
    """`unit` repeated, cut to exactly `size` UTF-8 bytes with `last` as its final character(s)."""
    end = last.encode()
    body = (unit * (size // len(unit.encode()) + 1)).encode()[: size - len(end)]
    return body.decode("utf-8", "ignore").encode().ljust(size - len(end), b"q") + end


LIMIT = 4192  # max_sentence_length: SentencePiece's default, and the corpus stage's cut
EDGE_LINES = {  # each made of its own word, so whether spm_train kept the line shows in the pieces
    "at the limit": (sized("kqa ", LIMIT), True),
    "one byte over": (sized("kqb ", LIMIT + 1), False),
    "two-byte characters, the last ending at the limit": (sized("жщ ", LIMIT, "ж"), True),
    "a two-byte character straddling the limit": (sized("kqc ", LIMIT + 1, "ж"), False),
    "a three-byte character ending at the limit": (sized("kqd ", LIMIT, "€"), True),
    "a three-byte character straddling the limit": (sized("kqe ", LIMIT + 1, "€"), False),
    "a four-byte character straddling the limit": (sized("kqf ", LIMIT + 2, "😀"), False),
    "fewer characters than the limit, more bytes": (sized("kqlж ", LIMIT + 108), False),
    "U+2585 at the start": ("\u2585 kqg kqg kqg".encode(), False),
    "U+2585 at the end": ("kqh kqh kqh \u2585".encode(), False),
}
BLANK_LINES = [b"", b" ", b"  \t  ", b"\t", "\u3000".encode()]  # the last: an ideographic space


def corpus_cut_lines() -> list[bytes]:
    """Lines as the corpus stage cuts them to LIMIT: at whitespace, and inside a run with none (at a
    character boundary, so some pieces fall a byte or two short of the limit)."""
    words = sized("kqi kqj ωkq ", 3 * LIMIT + 77)
    run = sized("漢字kqk", 2 * LIMIT + 5)
    return split_line(words, LIMIT) + split_line(run, LIMIT)


def lines_of(*names: str) -> list[bytes]:
    return [line.encode() for name in names for text in sample_documents(name) for line in text.split("\n") if line]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The sample's val and test text (49k lines, 1.8 MB), with the tricky lines and every line filter's
    edges among it."""
    path = tmp_path_factory.mktemp("exact") / "corpus.txt"
    edges = [line for line, _ in EDGE_LINES.values()] + BLANK_LINES + corpus_cut_lines()
    path.write_bytes(b"\n".join(lines_of("val", "test") + TRICKY_LINES * 5 + edges * 3) + b"\n")
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The test split's text alone, with the tricky lines: for the many flag combinations."""
    path = tmp_path_factory.mktemp("exact-small") / "small.txt"
    path.write_bytes(b"\n".join(lines_of("test") + TRICKY_LINES * 3) + b"\n")
    return path


def spm_model(inputs: list[Path], flags: dict, prefix: Path) -> tuple[pb.ModelProto, bytes]:
    """spm_train's model (its input paths and prefix cleared) and .vocab bytes."""
    spm.SentencePieceTrainer.train(
        input=",".join(map(str, inputs)), model_prefix=str(prefix), minloglevel=2, **flags
    )  # fmt: skip
    proto = pb.ModelProto.FromString(Path(f"{prefix}.model").read_bytes())
    proto.trainer_spec.ClearField("input")
    proto.trainer_spec.ClearField("model_prefix")
    return proto, Path(f"{prefix}.vocab").read_bytes()


def exact_model(inputs: list[Path], flags: dict, prefix: Path) -> tuple[pb.ModelProto, bytes]:
    """The exact trainer's model and .vocab bytes, from one table per input (merged when trained)."""
    tables = []
    for i, path in enumerate(inputs):
        table = word_counts.count([path], flags, prefix.parent / f"runs{i}.tmp", workers=2)
        tables.append(prefix.parent / f"{prefix.name}.{i}.words")
        word_table.write(table, tables[-1])
    exact_bpe.train_files(tables, flags, prefix)
    return pb.ModelProto.FromString(Path(f"{prefix}.model").read_bytes()), Path(f"{prefix}.vocab").read_bytes()


def assert_same(exact: tuple[pb.ModelProto, bytes], reference: tuple[pb.ModelProto, bytes]) -> None:
    (ours, our_vocab), (theirs, their_vocab) = exact, reference
    mine = [(p.piece, p.score, p.type) for p in ours.pieces]
    spms = [(p.piece, p.score, p.type) for p in theirs.pieces]
    first = next((i for i, (a, b) in enumerate(zip(mine, spms)) if a != b), min(len(mine), len(spms)))
    assert mine == spms, f"first difference at id {first}: {mine[first : first + 3]} vs {spms[first : first + 3]}"
    assert ours == theirs  # the specs too
    assert our_vocab == their_vocab


CASES = {
    "lossless": {**LOSSLESS_FLAGS, "vocab_size": 2500},
    "original": ORIGINAL_FLAGS,
    "coverage, digits, short pieces": {
        **ORIGINAL_FLAGS, "character_coverage": 0.98, "split_digits": True, "max_sentencepiece_length": 4,
        "split_by_number": False,
    },
    "symbols and ids": {
        **LOSSLESS_FLAGS, "user_defined_symbols": ["<tag>", "def", "ß"], "control_symbols": ["<ctl>"],
        "required_chars": "Ωλ", "unk_surface": "?", "vocabulary_output_piece_score": False, "bos_id": 3,
        "bos_piece": "<s>",
    },
    "suffix whitespace": {
        **LOSSLESS_FLAGS, "treat_whitespace_as_suffix": True, "allow_whitespace_only_pieces": True,
        "split_by_unicode_script": False,
    },
    "whitespace-only pieces": {
        **ORIGINAL_FLAGS, "allow_whitespace_only_pieces": True, "remove_extra_whitespaces": False,
    },
    "whole lines": {**ORIGINAL_FLAGS, "split_by_whitespace": False, "add_dummy_prefix": False, "vocab_size": 800},
    "nfkc_cf, delimiter": {**ORIGINAL_FLAGS, "normalization_rule_name": "nfkc_cf", "pretokenization_delimiter": ","},
    "soft vocab limit": {**ORIGINAL_FLAGS, "vocab_size": 60000, "hard_vocab_limit": False},
}  # fmt: skip


def test_the_exact_trainer_makes_spm_trains_model_from_the_sample_text(corpus, tmp_path):
    """The lossless and the original flags on 49k lines of sample text, tricky lines included; the
    text as two shards' tables, merged by the trainer. Every line filter at its edge: lines at and
    one byte past max_sentence_length (multi-byte characters straddling it), empty and
    whitespace-only lines, U+2585 at either end, lines the corpus stage cut: each kept or dropped as
    spm_train keeps or drops it."""
    half = corpus.read_bytes().split(b"\n")
    parts = [tmp_path / "a.txt", tmp_path / "b.txt"]
    parts[0].write_bytes(b"\n".join(half[: len(half) // 2]) + b"\n")
    parts[1].write_bytes(b"\n".join(half[len(half) // 2 :]))
    for name in ("lossless", "original"):
        flags = CASES[name]
        assert_same(exact_model(parts, flags, tmp_path / f"exact-{name}"), spm_model(parts, flags, tmp_path / name))
        held = "".join(word for i in (0, 1) for word in word_table.read(tmp_path / f"exact-{name}.{i}.words").words())
        for what, (line, kept) in EDGE_LINES.items():
            marker = next(word for word in line.decode().split() if word.isalpha())
            assert (marker in held) == kept, f"{name}: {what}"
        assert all(marker in held for marker in ("kqi", "kqj", "ωkq", "漢字kqk")), name  # every cut piece loaded
    cut = corpus_cut_lines()
    assert max(map(len, cut)) == LIMIT and min(len(line) for line in cut[:-1]) < LIMIT - 1
    assert len(cut) == 4 + 3 and all(line.decode() for line in cut)


@pytest.mark.parametrize("case", [name for name in CASES if name not in ("lossless", "original")])
def test_the_exact_trainer_honours_every_flag_as_spm_train_does(small, tmp_path, case):
    flags = CASES[case]
    assert_same(exact_model([small], flags, tmp_path / "exact"), spm_model([small], flags, tmp_path / "spm"))


def test_rule_files_and_the_tsv_input_format_as_spm_train_reads_them(tmp_path):
    rules = tmp_path / "rules.tsv"  # a -> b, "th" -> "T", x deleted, NBSP and tab -> space
    rules.write_text("61\t62\n74 68\t54\n78\n A0\t20\n9\t20\n")
    denormalize = tmp_path / "denormalize.tsv"
    denormalize.write_text("54\t74 68\n")
    text = tmp_path / "text.txt"
    text.write_bytes(b"\n".join(lines_of("test")[:3000]) + b"\n")
    flags = {**ORIGINAL_FLAGS, "vocab_size": 700, "normalization_rule_tsv": str(rules),
             "denormalization_rule_tsv": str(denormalize)}  # fmt: skip
    exact = exact_model([text], flags, tmp_path / "exact")
    assert exact[0].denormalizer_spec.precompiled_charsmap  # the decoding rules travel with the model
    assert_same(exact, spm_model([text], flags, tmp_path / "spm"))
    counted = tmp_path / "counted.tsv"
    counted.write_text("hello world\t5\nthe lazy dog\t3\naaaa\t7\nhello\t2\nσύνολο λέξεων\t11\n")
    flags = {**ORIGINAL_FLAGS, "vocab_size": 40, "input_format": "tsv", "hard_vocab_limit": False}
    assert_same(exact_model([counted], flags, tmp_path / "exact-tsv"), spm_model([counted], flags, tmp_path / "tsv"))


def stress_lines(seed: int) -> str:
    """Lines over a tiny alphabet: long runs, repeats and overlaps ('aaaa', 'abab'), where candidates
    run out and the order of places within a word decides the ties."""
    rng = random.Random(seed)
    alphabet = rng.choice(["ab", "abc", "aab", "ab1", "aβ", "あア漢", "ab "])
    lines = []
    for _ in range(rng.randint(5, 60)):
        words = []
        for _ in range(rng.randint(1, 6)):
            unit = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
            words.append(unit * rng.randint(1, 6) + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3))))
        lines.append((" " * rng.randint(0, 2)).join(words))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(16))
def test_ties_and_exhausted_candidates_on_tiny_alphabets(tmp_path, seed):
    flags = dict(
        ORIGINAL_FLAGS if seed % 2 else LOSSLESS_FLAGS,
        vocab_size=300 if seed % 3 else 3000,
        hard_vocab_limit=False,
        split_by_whitespace=seed % 4 != 3,
        treat_whitespace_as_suffix=seed % 5 == 4,
        allow_whitespace_only_pieces=seed % 3 == 2,
        max_sentencepiece_length=16 if seed % 6 else 5,
        split_by_number=seed % 9 != 4,
        split_digits=seed % 10 == 7,
    )
    text = tmp_path / "stress.txt"
    text.write_text(stress_lines(seed), encoding="utf-8")
    assert_same(exact_model([text], flags, tmp_path / "exact"), spm_model([text], flags, tmp_path / "spm"))


def test_every_growth_path_of_the_kernel_gives_the_same_merges(small):
    """Arrays that start at a few entries and grow as they must: the same merges as the sized run."""
    flags = {**LOSSLESS_FLAGS, "vocab_size": 1200}
    s = spm_spec.specs(flags)
    table = word_counts.count([small], flags, small.parent / "runs.tmp", workers=2)
    prepared = exact_bpe.prepare(table, s)
    spec = {name: getattr(s.trainer, name) for name in bpe_kernel.FLAGS} | {"max_merges": 600}
    runs = [
        bpe_kernel.train_merges_layout(
            prepared.syms.copy(), prepared.counts, unicode_scripts.script_array(), spec, tiny_start=tiny
        )
        for tiny in (False, True)
    ]
    assert runs[0] == runs[1] and len(runs[0]) == 600


def test_tables_merge_and_spill_to_the_table_of_the_whole_text(small, tmp_path, monkeypatch):
    """Counted whole, as two parts merged, or spilled to sorted runs as the words stage counts (runs
    merged a piece at a time into the file, in passes when there are many): the same table. The
    last never holds the whole table (it merged all the runs in memory: at 1e8 Pile lines a part's
    whole table, GBs, at once)."""
    lines = small.read_bytes().split(b"\n")
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"\n".join(lines[:4000]) + b"\n")
    b.write_bytes(b"\n".join(lines[4000:]))
    whole = word_counts.count([a, b], LOSSLESS_FLAGS, tmp_path / "r0.tmp", workers=2)
    merged = table_merge.merge([word_counts.count([path], LOSSLESS_FLAGS, tmp_path / "r2.tmp", 2) for path in (a, b)])
    assert merged.words() == whole.words() and np.array_equal(merged.counts, whole.counts)
    assert whole.words() == sorted(whole.words(), key=lambda word: word.encode())  # UTF-8 byte order
    path = tmp_path / "t.words"
    word_table.write(whole, path)
    again = word_table.read(path)
    assert again.words() == whole.words() and np.array_equal(again.counts, whole.counts)
    assert again.header["lines_loaded"] == whole.header["lines_loaded"] > 0 and whole.header["spilled_runs"] == 0

    largest, merge = [], table_merge.merge
    monkeypatch.setattr(
        table_merge, "merge", lambda tables, header=None: largest.append(merge(tables, header)) or largest[-1]
    )
    streamed = tmp_path / "streamed.words"
    header = word_counts.count_to_file(
        [a, b], LOSSLESS_FLAGS, streamed, tmp_path / "r1.tmp", 2, 1 << 15, 1 << 14, {"source": "s"}, fan_in=3
    )
    held = max(table.nbytes for table in largest)
    assert header["spilled_runs"] > 5 and held < whole.nbytes / 4, f"held {held:,} of a {whole.nbytes:,}-byte table"
    assert not list(tmp_path.glob("r*.tmp"))  # the spill folders go with the count
    spilled = word_table.read(streamed)
    assert spilled.words() == whole.words() and np.array_equal(spilled.counts, whole.counts)
    whole.header = {**whole.header, "source": "s", "spilled_runs": header["spilled_runs"]}
    word_table.write(whole, path)
    assert streamed.read_bytes() == path.read_bytes()  # the same file as the whole table written at once


def test_a_table_counted_under_other_params_is_refused_by_name(small, tmp_path):
    path = tmp_path / "00.words"
    word_table.write(word_counts.count([small], LOSSLESS_FLAGS, tmp_path / "r.tmp", 2), path)
    other = {**LOSSLESS_FLAGS, "remove_extra_whitespaces": True}
    with pytest.raises(PipelineError, match=r"00.words: counted with remove_extra_whitespaces = False.*True"):
        exact_bpe.train_files([path], other, tmp_path / "spm")
    with pytest.raises(PipelineError, match=r"00.words: counted with meta_pieces"):
        exact_bpe.train_files([path], {**LOSSLESS_FLAGS, "user_defined_symbols": ["<x>"]}, tmp_path / "spm")
    assert not list(tmp_path.glob("spm*"))


def test_a_damaged_table_is_refused_naming_its_file(small, tmp_path):
    path = tmp_path / "00.words"
    word_table.write(word_counts.count([small], LOSSLESS_FLAGS, tmp_path / "r.tmp", 2), path)
    data = path.read_bytes()
    damaged = {
        "a flipped byte": data[:-40] + bytes([data[-40] ^ 0xFF]) + data[-39:],
        "cut short": data[: len(data) // 2],
        "not a table": b"hello\n" + data,
    }
    for what, content in damaged.items():
        path.write_bytes(content)
        with pytest.raises(PipelineError, match=r"00.words: (damaged|not a) word-count table"):
            word_table.read(path)
        assert what


def test_too_few_pieces_get_spm_trains_own_rule(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("hello world\nthe quick brown fox jumps over the lazy dog\naaaa bbb aaaaa\n")
    flags = {**ORIGINAL_FLAGS, "vocab_size": 200}
    with pytest.raises(RuntimeError, match="Vocabulary size too high") as theirs:
        spm_model([text], flags, tmp_path / "spm")
    with pytest.raises(PipelineError, match="Vocabulary size too high") as ours:
        exact_model([text], flags, tmp_path / "exact")
    largest = r"Please set it to a value <= \d+"
    assert re.findall(largest, str(ours.value)) == re.findall(largest, str(theirs.value)) != []
    soft = {**flags, "hard_vocab_limit": False}
    assert_same(exact_model([text], soft, tmp_path / "exact-soft"), spm_model([text], soft, tmp_path / "soft"))
    alphabet = {**flags, "vocab_size": 20}  # fewer than the characters it must keep, and the meta pieces
    with pytest.raises(RuntimeError, match=r"Vocabulary size is smaller than required_chars. 20 vs \d+") as theirs:
        spm_model([text], alphabet, tmp_path / "spm")
    with pytest.raises(PipelineError, match=r"Vocabulary size is smaller than required_chars. 20 vs \d+") as ours:
        exact_model([text], alphabet, tmp_path / "exact")
    assert re.findall(r"20 vs \d+", str(ours.value)) == re.findall(r"20 vs \d+", str(theirs.value))


def test_empty_input_is_a_clear_error(tmp_path):
    text = tmp_path / "blank.txt"
    text.write_bytes(b"\n\n" + b"z" * 5000 + b"\n")  # empty lines and one too long: nothing to load
    table = word_counts.count([text], LOSSLESS_FLAGS, tmp_path / "r.tmp", 2)
    assert table.header["lines_loaded"] == 0 and table.header["lines_skipped"] == {"empty": 2, "too long": 1}
    with pytest.raises(PipelineError, match="no line to train on: every line was empty or skipped"):
        exact_bpe.train([table], LOSSLESS_FLAGS)


def test_flags_the_exact_trainer_cannot_honour_are_refused_by_name():
    for flag, value in [("auto_character_coverage", True), ("enable_differential_privacy", True)]:
        with pytest.raises(PipelineError, match=f"--{flag}: not supported by the exact trainer"):
            spm_spec.specs({**LOSSLESS_FLAGS, flag: value})
    spm_spec.specs({**LOSSLESS_FLAGS, "enable_differential_privacy": False})  # the default is no refusal
    with pytest.raises(PipelineError, match="--model_type=unigram: the exact trainer reproduces bpe only"):
        spm_spec.specs({**LOSSLESS_FLAGS, "model_type": "unigram"})
    with pytest.raises(PipelineError, match="input_sentence_size=1000 is below the .* lines loaded"):
        exact_bpe.train([word_table.table_of({"▁a": 5}, {"lines_loaded": 5000})], {**LOSSLESS_FLAGS,
                        "input_sentence_size": 1000})  # fmt: skip


def test_params_name_the_trainer_and_refuse_at_start_up_what_it_cannot_honour(tmp_path):
    params = (REPO / "params.yaml").read_text()
    assert "  trainer: exact" in params
    cases = {
        "trainer: exact": ("trainer: fast", "tokenizer.trainer: expected one of exact, spm, got 'fast'"),
        "model_type: bpe": ("model_type: unigram", "tokenizer.model_type: the exact trainer reproduces bpe only"),
        "num_threads: 2": ("num_threads: 2\n  auto_character_coverage: true", "tokenizer.auto_character_coverage"),
    }
    for old, (new, message) in cases.items():
        path = tmp_path / "params.yaml"
        path.write_text(params.replace(old, new, 1))
        with pytest.raises(PipelineError, match=message):
            load_params(path)
    path.write_text(params.replace("trainer: exact", "trainer: spm").replace("model_type: bpe", "model_type: unigram"))
    assert load_params(path).tokenizer_trainer == "spm"  # spm_train trains every model type


def test_the_memory_check_counts_the_tables_words(small, tmp_path):
    path = tmp_path / "00.words"
    word_table.write(word_counts.count([small], LOSSLESS_FLAGS, tmp_path / "r.tmp", 2), path)
    header = word_table.read_header(path)
    needed = exact_bpe.check_memory([path], 10**12)
    assert needed == exact_bpe.ram_needed([header]) > exact_bpe.RAM_PER_POSITION * header["utf8_bytes"]
    with pytest.raises(PipelineError, match=r"training on [\d,]+ distinct words .*00.words.* needs about"):
        exact_bpe.check_memory([path], needed - 1)


def test_a_table_past_the_kernels_int32_positions_is_refused(small, tmp_path, monkeypatch):
    table = word_counts.count([small], LOSSLESS_FLAGS, tmp_path / "r.tmp", 2)
    monkeypatch.setattr(exact_bpe, "MAX_POSITIONS", 1000)  # 2**31 - 2 in earnest
    with pytest.raises(PipelineError, match=r"takes at most 1,000 code points and words; lower corpus.max_lines"):
        exact_bpe.prepare(table, spm_spec.specs(LOSSLESS_FLAGS))


def test_spm_train_command_takes_spm_trains_flags_and_writes_its_files(small, tmp_path):
    """The command line as spm_train's (`--flag=value`, `--flag value`, `--bool`, `--nobool`, a
    flagfile); its files equal what SentencePiece makes of the same flags, spm_train's always-set
    fields included."""
    flagfile = tmp_path / "flags"
    flagfile.write_text("--vocab_size=1500\n--user_defined_symbols=<tag>,def\n")
    argv = [f"--input={small}", "--model_prefix", str(tmp_path / "m"), "--model_type=bpe", "--byte_fallback",
            "--noadd_dummy_prefix", "--num_threads", "2", f"--flagfile={flagfile}",
            "--normalization_rule_name=identity"]  # fmt: skip
    result = subprocess.run(
        ["pile-gpt", "spm-train", *argv],
        capture_output=True, text=True, env=child_env(), cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "== spm-train ==" in result.stdout
    flags = spm_train_command.trainer_flags(spm_train_command.parse(argv))
    assert flags["vocab_size"] == "1500" and flags["add_dummy_prefix"] == "false" and flags["byte_fallback"] == "true"
    assert flags["split_digits"] == "false"  # always set, as spm_train sets it: the model records it
    flags["model_prefix"] = str(tmp_path / "spm")
    spm.SentencePieceTrainer.train(minloglevel=2, **flags)
    ours = pb.ModelProto.FromString((tmp_path / "m.model").read_bytes())
    theirs = pb.ModelProto.FromString((tmp_path / "spm.model").read_bytes())
    theirs.trainer_spec.model_prefix = str(tmp_path / "m")
    assert ours.trainer_spec.HasField("split_digits") and ours == theirs
    assert (tmp_path / "m.vocab").read_bytes() == (tmp_path / "spm.vocab").read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["flags", "m.model", "m.vocab", "spm.model", "spm.vocab"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model_prefix=m", "--model_type=bpe"], "--input is required"),
        (["--input=nope.txt", "--model_prefix=m", "--model_type=bpe"], "--input: nope.txt: no such file"),
        (["--input=a.txt", "--model_prefix=m", "--vocab_sise=10"], "unknown command line flag 'vocab_sise'"),
        (["--input=a.txt", "--model_prefix=m"], "--model_type=unigram: the exact trainer reproduces bpe only"),
        (["--input=a.txt", "--model_prefix=m", "--model_type=bpe", "--character_coverage=0.5"], "character_coverage"),
    ],
)
def test_spm_train_command_refuses_bad_flags_before_reading_a_line(tmp_path, argv, message):
    (tmp_path / "a.txt").write_text("some text\n")
    result = subprocess.run(
        ["pile-gpt", "spm-train", *argv],
        capture_output=True, text=True, env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt"]
