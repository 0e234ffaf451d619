"""A tokenizer's vocabulary, id by id, from a SentencePiece `.model` or a Hugging Face `tokenizer.json`:
what decides whether token ids made by one tokenizer mean the same pieces under another.

Two tokenizers share a vocabulary when every id names the same piece string in both. Scores,
normalisers and merge rules may differ (they decide how new text is cut, not what an id means), so
arrays made by either are the same data; a tokenizer.json converted from a SentencePiece model
(Metaspace `▁`, byte pieces `<0x0A>`) has that model's vocabulary.
"""

import json
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.tokenizer import pieces


def read(model: Path) -> list[str | None]:
    """The piece of every id, in order (None for an id the file leaves unassigned); PipelineError
    naming the file when it is neither a SentencePiece model nor a tokenizer.json."""
    model = Path(model)
    if not model.is_file():
        raise PipelineError(f"{model}: no such tokenizer file")
    head = model.read_bytes()[:1].lstrip()
    if head == b"{":
        return _from_tokenizer_json(model)
    processor = pieces.processor(model)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def _from_tokenizer_json(path: Path) -> list[str | None]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        vocab = spec["model"]["vocab"]
        added = spec.get("added_tokens") or []
    except (ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path}: not a Hugging Face tokenizer.json with model.vocab ({exc})") from None
    if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: piece -> id
        by_id = {int(i): piece for piece, i in vocab.items()}
    else:  # Unigram: [piece, score] in id order
        by_id = {i: entry[0] for i, entry in enumerate(vocab)}
    by_id.update({int(token["id"]): token["content"] for token in added})
    size = max(by_id, default=-1) + 1
    return [by_id.get(i) for i in range(size)]


def difference(ours: list[str | None], theirs: list[str | None]) -> str | None:
    """How two vocabularies differ, in words (the sizes, or the first id whose pieces differ), or None."""
    if len(ours) != len(theirs):
        return f"{len(theirs):,} pieces there, {len(ours):,} here"
    for i, (mine, other) in enumerate(zip(ours, theirs)):
        if mine != other:
            return f"id {i:,} is {other!r} there, {mine!r} here"
    return None
