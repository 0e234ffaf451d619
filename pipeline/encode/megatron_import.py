"""An existing Megatron pair (PREFIX.bin, PREFIX.idx) as a token array of this pipeline: nothing is retokenized.

Teams bring arrays they already made (Megatron-LM's preprocess_data.py, NeMo, datatrove's
MegatronDocumentTokenizer, this pipeline elsewhere) with the tokenizer that made them. Before any
work the pair and that tokenizer are checked: the .idx is an MMIDIDX index of token ids (uint16, or
int32, kept as uint32: the same bytes), the .bin holds exactly its sequences, one after another;
the tokenizer's vocabulary is the pipeline's, id for id; the dtype holds it. Then one streaming
pass, in batches of whole documents spread over `pretokenize.workers` processes, checks every id
against the vocabulary and every document's last token against the separator, counts each
document's UTF-8 bytes from its decoded text (what bits per byte divides by), and copies the ids to
the key's array with an index and .docs of our own, one sequence per document. Memory holds a few
batches, whatever the pair's size. Every refusal names the file and the offset; nothing is written.
"""

import time
from collections import deque
from pathlib import Path

import numpy as np

from pipeline.config import formats, layout
from pipeline.config.layout import TOKENIZER_DIR
from pipeline.config.schema import Params, PretokenizeParams
from pipeline.core import files, progress
from pipeline.core.errors import PipelineError
from pipeline.core.machine import usable_cores
from pipeline.core.workers import OrderedPool
from pipeline.encode import megatron_index, token_files
from pipeline.encode.token_files import TokenWriter
from pipeline.ingest.records import UNLABELLED
from pipeline.tokenizer import pieces, vocabulary

DTYPE_OF_CODE = {8: "uint16", 4: "uint32"}
"""The index dtype codes that hold token ids, and the token dtype each becomes here."""
CHUNK_DOCS = 1 << 16  # documents whose boundaries are worked out at a time
WORKER_DIED_HINT = "lower pretokenize.workers or give the job more memory, then rerun (nothing was written)"


def token_dtype(index: megatron_index.Index) -> str:
    """`uint16` or `uint32` for an index of token ids; PipelineError naming it for any other dtype."""
    if index.code not in DTYPE_OF_CODE:
        raise PipelineError(
            f"{index.path}: byte 17: dtype code {index.code} ({index.dtype.name}): not token ids this pipeline "
            "reads; Megatron writes token arrays as uint16 (code 8) or int32 (code 4)"
        )
    return DTYPE_OF_CODE[index.code]


def check_vocabulary(tokenizer: Path, model: Path) -> list[str | None]:
    """The pipeline's vocabulary, refused unless `tokenizer` (the pair's) has it, id for id."""
    ours, theirs = vocabulary.read(model), vocabulary.read(tokenizer)
    difference = vocabulary.difference(ours, theirs)
    if difference:
        raise PipelineError(
            f"{tokenizer}: not the vocabulary of the pipeline's tokenizer {model} ({difference}): the pair's ids "
            "would mean other pieces here. Import arrays made with the pipeline's tokenizer (Megatron: "
            f"--tokenizer-type SentencePieceTokenizer --tokenizer-model {model})"
        )
    return ours


def check_dtype_holds(index: megatron_index.Index, dtype: str, vocab_size: int, model: Path) -> None:
    limit = token_files.ID_LIMITS[dtype]
    if vocab_size > limit:
        raise PipelineError(
            f"{index.path}: byte 17: dtype code {index.code} ({index.dtype.name}) holds ids below {limit:,}, but "
            f"{model} has {vocab_size:,} pieces: larger ids would have wrapped around. Remake the pair with int32 "
            "ids (Megatron picks them for vocabularies over 65,500)"
        )


def check_layout(index: megatron_index.Index, bin_path: Path) -> int:
    """The pair's token count, refused unless the .bin holds exactly the index's sequences, in order."""
    itemsize, end, n = index.dtype.itemsize, 0, len(index.lengths)
    indices = index.document_indices
    for first in range(0, n, megatron_index.CHUNK):
        lengths = np.asarray(index.lengths[first : first + megatron_index.CHUNK], dtype=np.int64)
        if (lengths < 0).any():
            bad = first + int(np.argmax(lengths < 0))
            raise PipelineError(f"{index.path}: sequence {bad:,} has a negative length ({int(index.lengths[bad])})")
        expected = end + np.concatenate(([0], np.cumsum(lengths)[:-1])) * itemsize
        wrong = np.flatnonzero(np.asarray(index.pointers[first : first + len(lengths)]) != expected)
        if len(wrong):
            bad = first + int(wrong[0])
            raise PipelineError(
                f"{index.path}: sequence {bad:,} starts at byte {int(index.pointers[bad]):,} of {bin_path}, but the "
                f"sequences before it end at byte {int(expected[wrong[0]]):,}: not one stream of its sequences"
            )
        end += int(lengths.sum()) * itemsize
    for first in range(0, len(indices) - 1, megatron_index.CHUNK):
        steps = np.diff(np.asarray(indices[first : first + megatron_index.CHUNK + 1]))
        if (steps < 0).any():
            at = first + int(np.argmax(steps < 0))
            raise PipelineError(f"{index.path}: the document indices go backwards at document {at:,}")
    try:
        actual = bin_path.stat().st_size
    except FileNotFoundError:
        raise PipelineError(f"{bin_path}: no such file (the .bin of {index.path})") from None
    if actual != end:
        raise PipelineError(
            f"{bin_path}: {actual:,} bytes, but {index.path} indexes {end // itemsize:,} tokens of {itemsize} bytes "
            f"({index.dtype.name}: {end:,} bytes): not this index's .bin, or written with another dtype"
        )
    return end // itemsize


def document_batches(index: megatron_index.Index, tokens_per_batch: int):
    """(first document, first token, tokens of each document) of consecutive batches of whole documents."""
    indices, first_token = index.document_indices, 0
    n_docs = len(indices) - 1
    for d0 in range(0, n_docs, CHUNK_DOCS):
        bounds = np.asarray(indices[d0 : min(d0 + CHUNK_DOCS, n_docs) + 1], dtype=np.int64)
        ends = np.concatenate(([0], np.cumsum(index.lengths[bounds[0] : bounds[-1]], dtype=np.int64)))
        doc_tokens = ends[bounds[1:] - bounds[0]] - ends[bounds[:-1] - bounds[0]]
        cuts = np.searchsorted(np.cumsum(doc_tokens), np.arange(tokens_per_batch, ends[-1], tokens_per_batch))
        for a, b in zip([0, *np.unique(cuts + 1)], [*np.unique(cuts + 1), len(doc_tokens)]):
            if b > a:
                yield d0 + a, first_token, doc_tokens[a:b]
                first_token += int(doc_tokens[a:b].sum())


_pair: dict = {}


def _open_pair(bin_path: str, dtype_code: int, model: str) -> None:
    processor = pieces.processor(Path(model))
    _pair.update(
        bin_path=bin_path,
        tokens=np.memmap(bin_path, dtype=megatron_index.CODES[dtype_code], mode="r"),
        processor=processor,
        vocab_size=processor.get_piece_size(),
        eos=processor.eos_id(),
        model=model,
    )


def check_batch(first_doc: int, first_token: int, doc_tokens: np.ndarray) -> np.ndarray:
    """A batch's ids checked (below the vocabulary size; each document ending with the separator) and
    each document's UTF-8 length, from its text decoded without the separator."""
    ids = _pair["tokens"][first_token : first_token + int(doc_tokens.sum())]
    bad = np.flatnonzero((ids < 0) | (ids >= _pair["vocab_size"]))
    if len(bad):
        at = first_token + int(bad[0])
        raise PipelineError(
            f"{_pair['bin_path']}: token {at:,} (byte {at * ids.itemsize:,}) is id {int(ids[bad[0]])}, outside the "
            f"{_pair['vocab_size']:,} pieces of {_pair['model']}: these ids come from another vocabulary"
        )
    ends = np.cumsum(doc_tokens)
    unended = np.flatnonzero((doc_tokens == 0) | (ids[np.maximum(ends - 1, 0)] != _pair["eos"]))
    if len(unended):
        d = int(unended[0])
        raise PipelineError(
            f"{_pair['bin_path']}: document {first_doc + d:,} (tokens {first_token + int(ends[d] - doc_tokens[d]):,} "
            f"to {first_token + int(ends[d]):,}) does not end with the separator "
            f"{_pair['processor'].id_to_piece(_pair['eos'])!r} (id {_pair['eos']}), so documents would bleed into "
            "each other; Megatron's preprocess_data.py appends it with --append-eod: remake the pair with it"
        )
    starts = ends - doc_tokens
    texts = _pair["processor"].decode([ids[a : b - 1].tolist() for a, b in zip(starts, ends)])
    return np.array([len(text.encode("utf-8")) for text in texts], dtype=np.uint64)


class _Inline:
    """One worker: the same work in this process, through OrderedPool's interface."""

    def __init__(self, *pair):
        _open_pair(*pair)
        self.done: deque = deque()

    def submit(self, *task) -> None:
        self.done.append(check_batch(*task))

    def pending(self) -> int:
        return len(self.done)

    def next_result(self) -> np.ndarray:
        return self.done.popleft()

    def close(self) -> None:
        pass


def run(bin_path: Path, tokenizer: Path, model: Path, output: Path, params: PretokenizeParams) -> dict:
    """Import the pair `bin_path` (its .idx beside it), made with `tokenizer`, as `output` (.bin, .idx,
    .docs, .json) of the pipeline's tokenizer `model`; return the metadata, with timings for the summary."""
    index = megatron_index.read(Path(bin_path).with_suffix(".idx"))
    dtype = token_dtype(index)
    ours = check_vocabulary(tokenizer, model)
    check_dtype_holds(index, dtype, len(ours), model)
    processor = pieces.processor(model)
    if processor.eos_id() < 0:
        raise PipelineError(f"{model}: the tokenizer has no eos piece, so no document of the pair can be checked")
    n_tokens = check_layout(index, bin_path)
    if n_tokens == 0:
        raise PipelineError(f"{index.path}: indexes no tokens")
    started = time.monotonic()
    workers = params.workers or usable_cores()
    pair = (str(bin_path), index.code, str(model))
    pool = _Inline(*pair) if workers == 1 else OrderedPool(check_batch, workers, _open_pair, pair, WORKER_DIED_HINT)
    source = np.memmap(bin_path, dtype=token_files.DTYPES[dtype], mode="r")
    try:
        with (
            TokenWriter(output, dtype) as writer,
            progress.bar(n_tokens, f"import {Path(bin_path).name}", unit="token") as pbar,
        ):
            waiting: deque = deque()  # at most 2 x workers batches in flight, written in order
            for batch in document_batches(index, max(1, params.batch_bytes // index.dtype.itemsize)):
                pool.submit(*batch)
                waiting.append(batch)
                if pool.pending() >= 2 * workers:
                    _write(writer, source, waiting.popleft(), pool.next_result(), pbar)
            while waiting:
                _write(writer, source, waiting.popleft(), pool.next_result(), pbar)
    finally:
        pool.close()
    metadata = writer.metadata(
        source=[str(bin_path), str(index.path)],
        vocab_size=len(ours),
        eos_id=processor.eos_id(),
        tokenizer_sha256=files.sha256(model),
        group_field=None,
        imported={
            "from": "Megatron MMIDIDX pair",
            "dtype_code": index.code,
            "sequences": len(index.lengths),
            "tokenizer": str(tokenizer),
            "tokenizer_sha256": files.sha256(tokenizer),
            "n_bytes": "each document's UTF-8 length as the pipeline's tokenizer decodes it",
        },
    )
    files.write_json_atomic(token_files.metadata_path(output), metadata)
    return {**metadata, "seconds": time.monotonic() - started, "workers": workers}


def _write(writer: TokenWriter, source: np.memmap, batch: tuple, n_bytes: np.ndarray, pbar) -> None:
    _, first_token, doc_tokens = batch
    count = int(doc_tokens.sum())
    writer.add(np.asarray(source[first_token : first_token + count]), doc_tokens, n_bytes, [UNLABELLED] * len(n_bytes))
    pbar.update(count)


def run_stage(p: Params, key: str) -> None:
    """pretokenize@KEY for a Megatron pair: checked and copied into data/tokens, then a summary."""
    bin_path, idx_path, tokenizer = formats.raw_files(p.data, key)
    output = layout.tokens_path(key)
    meta = run(bin_path, tokenizer, TOKENIZER_DIR / "spm.model", output, p.pretokenize)
    seconds = meta["seconds"]
    imported = meta["imported"]
    progress.summary(
        f"pretokenize@{key}",
        {
            "from": f"{bin_path}, {idx_path.name} (Megatron, dtype code {imported['dtype_code']}, "
            f"{imported['sequences']:,} sequences)",
            "tokenizer": f"{tokenizer}: the vocabulary of {TOKENIZER_DIR / 'spm.model'}, id for id",
            "to": f"{output} ({meta['dtype']}), {token_files.index_path(output).name} (Megatron's index, one sequence "
            f"per document), {token_files.docs_path(output).name}, {token_files.metadata_path(output).name}",
            "documents": f"{meta['n_docs']:,}, each ending with the separator; {meta['n_bytes']:,} bytes decoded",
            "tokens": f"{meta['n_tokens']:,}, copied as they are: nothing was retokenized",
            "speed": f"{meta['n_tokens'] / max(seconds, 1e-9) / 1e6:.1f} M tokens/s with {meta['workers']} workers "
            f"({seconds:.1f} s)",
        },
    )
