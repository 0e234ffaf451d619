"""params.yaml: typed, validated at start-up, with messages that name the key."""

import pytest
import yaml

from pipeline.config import formats, layout
from pipeline.config.layout import RAW_DIR, TOKENS_DIR
from pipeline.config.load import load_params
from pipeline.config.schema import Params, Shard
from pipeline.core.errors import PipelineError
from pipeline.tokenizer import spm_train
from tests.helpers import REPO

ORIGINAL_COMMAND = (
    "spm_train --input tokenizer.train.text --vocab_size 50000 --model_prefix 50000 "
    "--model_type bpe --pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=-1 --pad_piece=[PAD] "
    "--unk_piece=[UNK] --input_sentence_size=100000000"
)


def load_with(tmp_path, edit) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def expect_error(tmp_path, edit, *fragments):
    with pytest.raises(PipelineError) as info:
        load_with(tmp_path, edit)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["params.yaml", "presets/pile.yaml", "presets/pile-original.yaml"])
def test_sample_params_and_presets_load(name):
    p = load_params(REPO / name)
    assert p.corpus.shards and set(p.corpus.shards) <= set(layout.keys(p.data, "train"))
    assert {"val", "test"} <= set(p.data.shards)


def test_pile_presets_hold_every_original_file():
    for name in ("pile.yaml", "pile-original.yaml"):
        p = load_params(REPO / "presets" / name)
        assert sorted(s.path for s in p.data.shards.values()) == sorted(
            [f"train/{i:02d}" for i in range(30)] + ["val", "test"]
        )
        assert p.corpus.shards == ("11", "22") and p.tokenizer["vocab_size"] == 50000


def test_the_original_pile_preset_holds_the_published_checksums():
    published_file = REPO.parent / "shared" / "pile-sha256.tsv"
    if not published_file.is_file():
        pytest.skip(f"{published_file} is absent: the published checksums are not on this machine")
    rows = [line.split("\t") for line in published_file.read_text().splitlines()[1:] if line]
    original = load_params(REPO / "presets" / "pile-original.yaml")
    assert {s.path + ".jsonl.zst": s.sha256 for s in original.data.shards.values()} == {r[0]: r[2] for r in rows}


def leaves(tree: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every field in a params tree (the tokenizer's verbatim flags excepted)."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and key != "tokenizer":
            out += leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


REQUIRED = [
    dotted
    for dotted in leaves(yaml.safe_load((REPO / "params.yaml").read_text()))
    if not (dotted.startswith("data.shards.") and dotted.rsplit(".", 1)[1] in Shard.OPTIONAL)
]


@pytest.mark.parametrize("dotted", REQUIRED)
def test_a_field_missing_from_the_params_file_is_refused_by_name(tmp_path, dotted):
    """The loader is no stage's dependency, so no default in code may stand in for a field."""

    def remove(raw):
        *parents, last = dotted.split(".")
        for key in parents:
            raw = raw[key]
        del raw[last]

    expect_error(tmp_path, remove, f"{dotted}: missing")


def test_unknown_key_is_named(tmp_path):
    expect_error(tmp_path, lambda raw: raw["corpus"].update(max_line=5), "corpus.max_line: unknown key")
    expect_error(tmp_path, lambda raw: raw.update(trian={}), "trian: unknown key")
    expect_error(
        tmp_path, lambda raw: raw["tokenizer"].update(vocab_sise=5), "tokenizer.vocab_sise", "not a SentencePiece"
    )


def test_wrong_value_is_named(tmp_path):
    expect_error(tmp_path, lambda raw: raw["pretokenize"].update(dtype="int8"), "pretokenize.dtype", "'int8'")
    expect_error(tmp_path, lambda raw: raw["pretokenize"].update(workers="two"), "pretokenize.workers: expected int")
    expect_error(tmp_path, lambda raw: raw["download"].update(retries=True), "download.retries: expected int")
    expect_error(tmp_path, lambda raw: raw["corpus"].update(shards=["val"]), "corpus.shards[0]", "not a train shard")
    expect_error(tmp_path, lambda raw: raw["data"].update(source="ftp://x"), "data.source", "only file://")
    expect_error(tmp_path, lambda raw: raw["data"]["shards"]["00"].update(sha256="abc"), "data.shards.00.sha256")


@pytest.mark.parametrize("path", ["../x", "train/../../etc/passwd", "/etc/passwd", "train/0 0", "a/b/c/d/e/f/g/h/i"])
def test_shard_path_that_is_not_a_plain_name_is_refused(tmp_path, path):
    expect_error(
        tmp_path,
        lambda raw: raw["data"]["shards"].update(evil={"path": path, "sha256": None}),
        "data.shards.evil.path",
        "not a plain relative path",
    )


def test_vocabulary_that_overflows_uint16_is_refused_before_any_work(tmp_path):
    expect_error(
        tmp_path,
        lambda raw: raw["tokenizer"].update(vocab_size=70000),
        "tokenizer.vocab_size",
        "uint16",
        "pretokenize.dtype: uint32",
    )

    def to_uint32(raw):
        raw["tokenizer"]["vocab_size"] = 70000
        raw["pretokenize"]["dtype"] = "uint32"

    assert load_with(tmp_path, to_uint32).pretokenize.dtype == "uint32"


def test_sentencepiece_sampling_below_the_corpus_size_is_refused(tmp_path):
    expect_error(
        tmp_path,
        lambda raw: raw["tokenizer"].update(input_sentence_size=1000),
        "tokenizer.input_sentence_size",
        "not reproducible",
    )


def test_paths_the_pipeline_owns_cannot_be_set(tmp_path):
    expect_error(tmp_path, lambda raw: raw["tokenizer"].update(model_prefix="/tmp/x"), "tokenizer.model_prefix")


def test_original_spm_train_command_is_expressible_in_params(tmp_path):
    """Every flag of the seed's command goes into `tokenizer:` verbatim and renders back the same."""
    flags = {}
    for arg in (
        ORIGINAL_COMMAND.replace("--input tokenizer.train.text ", "")
        .replace("--vocab_size 50000", "--vocab_size=50000")
        .replace("--model_prefix 50000 ", "")
        .replace("--model_type bpe", "--model_type=bpe")
        .split()[1:]
    ):
        name, value = arg[2:].split("=")
        flags[name] = int(value) if value.lstrip("-").isdigit() else value

    def original(raw):
        raw["tokenizer"] = dict(flags, max_sentence_length=4192)
        raw["corpus"]["max_lines"] = 100_000_000

    p = load_with(tmp_path, original)
    rendered = spm_train.command_line(
        {k: v for k, v in p.tokenizer.items() if k != "max_sentence_length"}, "tokenizer.train.text", "50000"
    )
    assert sorted(rendered.split()[1:]) == sorted(
        f"--{k}={v}" for k, v in {"input": "tokenizer.train.text", "model_prefix": "50000", **flags}.items()
    )


def test_a_shard_path_names_its_format_and_means_jsonl_zst_without_one(tmp_path):
    def shards(raw):
        raw["data"]["shards"].update(
            web={"path": "sample/10BT/000_00000.parquet"},
            gz={"path": "v1/books-0000.jsonl.gz"},
            dclm={
                "path": "global-shard_01_of_10/local-shard_0_of_10/shard_{:08d}_processed.jsonl.zstd",
                "numbers": [3, 5],
            },
        )

    p = load_with(tmp_path, shards)
    assert formats.shard_files(layout.shard(p.data, "00")) == ["train/00.jsonl.zst"]  # the Pile's params, unchanged
    assert formats.raw_files(p.data, "00") == [RAW_DIR / "00" / "train/00.jsonl.zst"]
    assert formats.shard_files(layout.shard(p.data, "web")) == ["sample/10BT/000_00000.parquet"]
    assert formats.shard_files(layout.shard(p.data, "gz")) == ["v1/books-0000.jsonl.gz"]
    assert formats.shard_files(layout.shard(p.data, "dclm")) == [
        "global-shard_01_of_10/local-shard_0_of_10/shard_00000003_processed.jsonl.zstd",
        "global-shard_01_of_10/local-shard_0_of_10/shard_00000004_processed.jsonl.zstd",
    ]
    assert layout.tokens_path("dclm") == TOKENS_DIR / "dclm.bin"
    assert sorted(layout.keys(p.data, "train")) == ["00", "01", "dclm", "gz", "web"] and layout.keys(
        p.data, "test"
    ) == ["test"]


def test_numbered_shards_and_their_patterns_are_checked(tmp_path):
    def numbered(**shard):
        return lambda raw: raw["data"]["shards"].update(chunk=shard)

    expect_error(
        tmp_path, numbered(path="c/x_{}.jsonl.zst", numbers=[5, 5]), "data.shards.chunk.numbers", "[first, stop)"
    )
    expect_error(tmp_path, numbered(path="c/x.jsonl.zst", numbers=[0, 5]), "data.shards.chunk.path", "no {}")
    expect_error(tmp_path, numbered(path="c/x_{}.jsonl.zst"), "data.shards.chunk.path", "give the numbers")
    expect_error(
        tmp_path,
        numbered(path="c/x_{}.jsonl.zst", numbers=[0, 2], sha256="0" * 64),
        "data.shards.chunk.sha256",
        "one file",
    )
    expect_error(tmp_path, numbered(path="c/x_{}/../../y", numbers=[0, 2]), "data.shards.chunk.path", "not a plain")


def test_evaluating_on_a_training_shard_is_refused_and_split_says_what_a_shard_is_for(tmp_path):
    def evaluate_on(split):
        def edit(raw):
            raw["data"]["shards"]["wiki"] = {"path": "wiki", **({"split": split} if split else {})}
            raw["evaluate"]["splits"] = ["val", "wiki"]

        return edit

    expect_error(tmp_path, evaluate_on(None), "evaluate.splits[1]", "'wiki' is a training shard")
    p = load_with(tmp_path, evaluate_on("test"))
    assert "wiki" not in layout.keys(p.data, "train") and layout.keys(p.data, "test") == ["test", "wiki"]
    expect_error(tmp_path, lambda raw: raw["data"]["shards"]["val"].update(group="x"), "data.shards.val.group")
    expect_error(tmp_path, lambda raw: raw["data"]["shards"]["val"].update(split="train"), "no `val` entry")


def test_field_paths_are_checked_and_null_means_no_groups(tmp_path):
    expect_error(tmp_path, lambda raw: raw["data"].update(text_field="meta..text"), "data.text_field")
    expect_error(tmp_path, lambda raw: raw["data"].update(group_field=""), "data.group_field")
    assert load_with(tmp_path, lambda raw: raw["data"].update(group_field=None)).data.group_field is None


def test_gpt2_means_gpt2_and_the_modern_pieces_are_checked(tmp_path):
    gpt2 = {"arch": "gpt2", "position": "learned", "norm": "layernorm", "mlp": "gelu", "qk_norm": False}
    expect_error(
        tmp_path, lambda raw: raw["model"].update(gpt2, tie_embeddings=False), "model.tie_embeddings", "not GPT-2's"
    )
    expect_error(
        tmp_path, lambda raw: raw["model"].update(gpt2, mlp="swiglu"), "model.mlp", "not GPT-2's", "arch: modern"
    )
    expect_error(tmp_path, lambda raw: raw["model"].update(arch="modern", bias=True), "model.bias", "no biases")
    expect_error(
        tmp_path,
        lambda raw: raw["model"].update(arch="modern", position="rope", n_head=8, n_embd=120),
        "model.n_head",
        "even",
    )
    pieces = {"arch": "modern", "position": "rope", "norm": "layernorm", "mlp": "relu2", "bias": False}
    modern = load_with(tmp_path, lambda raw: raw["model"].update(pieces))
    assert (modern.model.position, modern.model.mlp, modern.model.norm) == ("rope", "relu2", "layernorm")


def test_muon_is_refused_with_a_strategy_that_shards_matrices(tmp_path):
    expect_error(
        tmp_path, lambda raw: raw["train"].update(optimizer="muon", strategy="fsdp"), "train.optimizer", "shards them"
    )
    expect_error(tmp_path, lambda raw: raw["train"].update(muon_momentum=1.0), "train.muon_momentum")
    # like muon_lr, a setting of Muon's that AdamW leaves alone: switching train.optimizer needs no other edit
    assert load_with(
        tmp_path, lambda raw: raw["train"].update(optimizer="adamw", muon_split_qkv=True)
    ).train.muon_split_qkv


def test_momentum_warm_up_and_group_learning_rates_are_checked(tmp_path):
    expect_error(tmp_path, lambda raw: raw["train"].update(muon_momentum_start=1.0), "train.muon_momentum_start")
    expect_error(
        tmp_path, lambda raw: raw["train"].update(muon_momentum_warmup_steps=-1), "train.muon_momentum_warmup_steps"
    )
    expect_error(tmp_path, lambda raw: raw["train"].update(embedding_lr=0.0), "train.embedding_lr", "positive")
    expect_error(tmp_path, lambda raw: raw["train"].update(head_lr=-0.1), "train.head_lr", "positive")
    tied = lambda raw: (raw["model"].update(tie_embeddings=True), raw["train"].update(head_lr=0.001))  # noqa: E731
    expect_error(tmp_path, tied, "train.head_lr", "train.embedding_lr")
    p = load_with(tmp_path, lambda raw: raw["train"].update(embedding_lr=0.01, head_lr=0.001))
    assert (p.train.embedding_lr, p.train.head_lr, p.model.zero_init) == (0.01, 0.001, False)


SLIMPAJAMA_TRAIN_FILES = [5912, 5911, 5919, 5917, 5933, 5915, 5906, 5921, 5920, 5912]  # chunk1..10, published listing


def test_the_slimpajama_preset_reads_every_file_the_listing_holds_in_each_train_chunk():
    p = load_params(REPO / "presets" / "slimpajama.yaml")
    chunks = {key: shard.numbers for key, shard in p.data.shards.items() if key.startswith("chunk")}
    assert chunks == {f"chunk{i}": (0, n) for i, n in enumerate(SLIMPAJAMA_TRAIN_FILES, 1)}
    assert formats.shard_files(p.data.shards["chunk5"])[-1] == "train/chunk5/example_train_5932.jsonl.zst"
