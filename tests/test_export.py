"""The Hugging Face export: stock transformers classes, logits and token ids equal to ours."""

import shutil

import numpy as np
import pytest
import sentencepiece as spm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config.schema import PretokenizeParams
from pipeline.core.errors import PipelineError
from pipeline.encode import pretokenize
from pipeline.evaluation import sample
from pipeline.export import hf
from pipeline.model.gpt import GPT, GPTConfig
from pipeline.tokenizer import spm_train
from tests.helpers import LOSSLESS_FLAGS, SAMPLE, sample_documents

SEED_FLAGS = {  # the seed's normalisation (nmt_nfkc, extra whitespace removed, no byte fallback), small vocabulary
    k: v
    for k, v in LOSSLESS_FLAGS.items()
    if k not in ("normalization_rule_name", "remove_extra_whitespaces", "byte_fallback")
}
HOSTILE = st.lists(
    st.one_of(
        st.sampled_from(
            [
                " ",
                "  ",
                "\t",
                "\n",
                "\r\n",
                "\u2028",
                "\u00a0",
                "\u200b",
                "\ufeff",
                "▁",
                "😀",
                "👍🏽",
                "e\u0301",
                "中",
                "ಕ",
                "த",
                "<|endoftext|>",
                "[PAD]",
                "[UNK]",
                "x" * 40,
                "0123",
            ]
        ),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=40,
).map("".join)


MODERN = {"arch": "modern", "position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "tie_embeddings": False}


def make_export(root, model_file, block_size=64, **pieces):
    """A randomly initialised GPT over `model_file`'s vocabulary, saved as the train stage saves it,
    the sample's val and test shards tokenized with it, and the export of it all. With `pieces` (a
    modern model), every weight is perturbed too, so that a gain exported as another's shows."""
    model_dir, tokens_dir = root / "model", root / "tokens"
    vocab = spm.SentencePieceProcessor(model_file=str(model_file)).get_piece_size()
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=vocab,
            block_size=block_size,
            n_layer=2,
            n_head=2,
            n_embd=32,
            dropout=0.0,
            bias=False,
            vocab_multiple=64,
            **pieces,
        )
    )
    if pieces:
        with torch.no_grad():
            for weight in model.parameters():
                weight.add_(0.1 * torch.randn_like(weight))
    model.save_pretrained(model_dir)
    shutil.copyfile(model_file, model_dir / "tokenizer.model")
    for name in ("val", "test"):
        pretokenize.run([SAMPLE / f"{name}.jsonl.zst"], model_file, tokens_dir / f"{name}.bin", PretokenizeParams())
    report = hf.export(
        model_dir, root / "hf", tokens_dir / "val.bin", [tokens_dir / "val.bin", tokens_dir / "test.bin"]
    )
    return model_dir, root / "hf", report


@pytest.fixture(scope="module")
def lossless(small_model, tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("lossless"), small_model)


@pytest.fixture(scope="module")
def seed_flags(small_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("seed")
    spm_train.train([small_model.parent / "corpus.txt"], root / "spm", SEED_FLAGS)
    return make_export(root, root / "spm.model")


@pytest.fixture(scope="module", autouse=True)
def offline(monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch_module.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def load_hf(directory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(directory)).eval(), AutoTokenizer.from_pretrained(str(directory))


def test_the_export_is_a_stock_gpt2_whose_logits_equal_ours(lossless):
    model_dir, hf_dir, report = lossless
    exported, _ = load_hf(hf_dir)
    assert type(exported).__name__ == "GPT2LMHeadModel" and report.logits_max_abs_diff <= hf.LOGITS_ATOL
    ours = GPT.from_pretrained(model_dir)
    ids = np.fromfile(model_dir.parent / "tokens/val.bin", dtype=np.uint16).astype(np.int64)
    rng = np.random.default_rng(0)
    for length in (1, 17, 64):  # short and full windows, anywhere in the validation stream
        starts = rng.integers(0, len(ids) - length, size=4)
        x = torch.from_numpy(np.stack([ids[s : s + length] for s in starts]))
        with torch.no_grad():
            theirs, mine = exported(x).logits, ours(x)
        assert theirs.shape == mine.shape == (4, length, ours.config.vocab_size)  # the padded rows are cut
        assert (theirs - mine).abs().max() <= 1e-4
    assert exported.get_output_embeddings().weight.data_ptr() == exported.get_input_embeddings().weight.data_ptr()


def test_greedy_generation_through_transformers_equals_pile_gpt_sample(lossless):
    model_dir, hf_dir, _ = lossless
    exported, hf_tokenizer = load_hf(hf_dir)
    processor = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    for prompt in ("def ", "The Django", "  indented"):
        ids = [processor.eos_id()] + processor.encode(prompt)
        out = exported.generate(
            torch.tensor([ids]),
            max_new_tokens=20,
            do_sample=False,
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        )[0, 1:].tolist()
        if processor.eos_id() in out[len(ids) - 1 :]:
            out = out[: out.index(processor.eos_id(), len(ids) - 1)]
        assert hf_tokenizer.decode(out) == sample.continue_text(model_dir, prompt, 20, 0.0, None, 0)


@pytest.mark.parametrize("flags", ["lossless", "seed_flags"])
def test_tokenizer_ids_equal_sentencepiece_on_every_sample_document(flags, request):
    model_dir, hf_dir, report = request.getfixturevalue(flags)
    _, hf_tokenizer = load_hf(hf_dir)
    processor = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    documents = sample_documents("val") + sample_documents("test")
    assert hf_tokenizer(documents, add_special_tokens=False)["input_ids"] == processor.encode(documents)
    if flags == "lossless":
        assert report.tokenizer.startswith("tokenizer.json (fast")
        assert all(hf_tokenizer.decode(ids) == text for ids, text in zip(processor.encode(documents), documents))
    else:  # nmt_nfkc is not exact in `tokenizers`: the SentencePiece-backed class, and the summary says why
        assert hf.SENTENCEPIECE_CLASS in report.tokenizer and "nmt_nfkc" in report.tokenizer
    assert hf_tokenizer.eos_token == "<|endoftext|>" and hf_tokenizer.pad_token == "[PAD]"
    assert hf_tokenizer.bos_token is None and hf_tokenizer("x")["input_ids"] == processor.encode("x")


@pytest.mark.parametrize("flags", ["lossless", "seed_flags"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=HOSTILE)
def test_tokenizer_ids_equal_sentencepiece_on_generated_hostile_text(flags, request, text):
    model_dir, hf_dir, _ = request.getfixturevalue(flags)
    _, hf_tokenizer = hf_cached(hf_dir)
    processor = spm_cached(model_dir / "tokenizer.model")
    ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == processor.encode(text)
    if flags == "lossless":
        assert hf_tokenizer.decode(ids) == processor.decode(ids)


_cache: dict = {}


def hf_cached(directory):
    return _cache.setdefault(("hf", str(directory)), load_hf(directory))


def spm_cached(model_file):
    return _cache.setdefault(("spm", str(model_file)), spm.SentencePieceProcessor(model_file=str(model_file)))


def test_a_vocabulary_the_model_does_not_have_is_refused(lossless, tmp_path):
    model_dir, _, _ = lossless
    wrong = tmp_path / "model"
    shutil.copytree(model_dir, wrong)
    config = (wrong / "config.json").read_text().replace('"vocab_size": 1000', '"vocab_size": 999')
    (wrong / "config.json").write_text(config)
    with pytest.raises(PipelineError, match="1000 pieces, but the model has 999"):
        hf.export(wrong, tmp_path / "hf", model_dir.parent / "tokens/val.bin", [])
    assert not (tmp_path / "hf").exists() and not (tmp_path / "hf.tmp").exists()


@pytest.mark.parametrize("qk_norm, expected", [(False, "LlamaForCausalLM"), (True, "Qwen3ForCausalLM")])
def test_a_modern_model_exports_as_stock_llama_or_qwen3_with_our_logits_and_generation(
    small_model, tmp_path, qk_norm, expected
):
    model_dir, hf_dir, report = make_export(tmp_path, small_model, **MODERN, qk_norm=qk_norm)
    exported, _ = load_hf(hf_dir)
    assert type(exported).__name__ == report.architecture == expected
    assert report.logits_max_abs_diff <= hf.LOGITS_ATOL
    ours = GPT.from_pretrained(model_dir)
    ids = np.fromfile(model_dir.parent / "tokens/val.bin", dtype=np.uint16).astype(np.int64)
    x = torch.from_numpy(np.stack([ids[s : s + 64] for s in (0, 999, 5000)]))
    with torch.no_grad():
        assert (exported(x).logits - ours(x)).abs().max() <= 1e-4
    prompt = torch.from_numpy(ids[100:110]).unsqueeze(0)  # generation runs RoPE at growing offsets, with a cache
    theirs = exported.generate(prompt, max_new_tokens=20, do_sample=False, attention_mask=torch.ones_like(prompt))
    mine = ours.generate(prompt, max_new_tokens=20, temperature=0)
    assert theirs.tolist() == mine.tolist()


@pytest.mark.parametrize("piece, value", [("mlp", "relu2"), ("position", "learned"), ("norm", "layernorm")])
def test_a_modern_mix_without_a_stock_class_is_refused_naming_the_option(small_model, tmp_path, piece, value):
    with pytest.raises(PipelineError, match=rf"export: model.{piece}: {value} has no stock transformers equivalent"):
        make_export(tmp_path, small_model, **{**MODERN, piece: value})
    assert not (tmp_path / "hf").exists()
