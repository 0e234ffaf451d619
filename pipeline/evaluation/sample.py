"""Sampling from an exported model, without Lightning."""

from pathlib import Path

import torch

from pipeline.core.errors import PipelineError
from pipeline.model.gpt import GPT
from pipeline.tokenizer import pieces


def continue_text(
    model_dir: str | Path, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None, seed: int
) -> str:
    """The prompt followed by `max_new_tokens` sampled tokens, decoded (stopping at a separator)."""
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").exists():
        raise PipelineError(f"{model_dir}/model.safetensors: missing; run `dvc repro train` first")
    if temperature < 0:
        raise PipelineError("--temperature must not be negative")
    processor = pieces.processor(model_dir / "tokenizer.model")
    model = GPT.from_pretrained(model_dir)
    ids = [processor.eos_id()] + processor.encode(prompt)
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(torch.tensor([ids]), max_new_tokens, temperature, top_k, generator)[0, 1:].tolist()
    if processor.eos_id() in out[len(ids) - 1 :]:
        out = out[: out.index(processor.eos_id(), len(ids) - 1)]
    return processor.decode(out)
