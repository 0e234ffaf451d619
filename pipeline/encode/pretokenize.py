"""Tokenize one shard into a token array, its index (Megatron's), its documents' facts and its metadata.

The main process reads the shard's files (pipeline.ingest.documents: any format) and cuts them into
batches of raw lines or rows; `workers` processes parse and encode them (with pipeline.encode.encoder:
SentencePiece's exact ids, BPE once per word, compiled where the model allows); results come back
in order through a window of at most 2 x workers batches, so memory depends on the batch size and
the longest document, never on the shard's size. A worker that dies (the OOM killer, a signal)
stops the stage within a second with its signal named (pipeline.core.workers). Every document is
followed by the separator (the tokenizer's eos piece).
"""

import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pipeline.config import formats, layout
from pipeline.config.layout import TOKENIZER_DIR
from pipeline.config.schema import Params, PretokenizeParams
from pipeline.core import files, progress
from pipeline.core.errors import PipelineError
from pipeline.core.machine import usable_cores
from pipeline.core.workers import OrderedPool
from pipeline.encode import megatron_import, token_files
from pipeline.encode.encoder import WordCacheEncoder
from pipeline.encode.token_files import TokenWriter
from pipeline.ingest.documents import Reader, describe, open_reader, parse
from pipeline.ingest.records import PILE_FIELDS, BadRecord, Fields, bad_record_message
from pipeline.tokenizer import pieces
from pipeline.tokenizer.pieces import SPACE

WORKER_DIED_HINT = (
    "lower pretokenize.workers or pretokenize.batch_bytes, or give the job more memory, then rerun "
    "(the shard is redone from its start; nothing was written)"
)


@dataclass
class Batch:
    """What a worker returns for one batch of lines or rows, in their order."""

    tokens: np.ndarray
    doc_tokens: np.ndarray
    doc_bytes: np.ndarray
    groups: list[str]
    bad: list[tuple[int, int, str, str]] = field(default_factory=list)
    """(file index, line or row number, kind, message) of each item that is not a record."""
    words: int = 0
    """Words seen and words the encoder had to run BPE on (for the summary's cache hit rate)."""
    misses: int = 0
    marked: int = 0
    """Documents holding U+2581, SentencePiece's whitespace marker: it decodes as a space."""


_encoder: WordCacheEncoder | None = None
_fields: Fields | None = None


def _load_encoder(model: str, dtype: str, fields: Fields) -> None:
    global _encoder, _fields
    _encoder, _fields = WordCacheEncoder(Path(model), dtype), fields


def encode_batch(file_index: int, first: int, items: list) -> Batch:
    """Parse and encode a batch of raw items (numbered from `first` in file `file_index`); bad items are
    reported, never encoded."""
    texts, doc_bytes, groups, bad = [], [], [], []
    for number, item in enumerate(items, first):
        try:
            record = parse(item, number, _fields)
        except BadRecord as exc:
            bad.append((file_index, number, exc.kind, str(exc)))
            continue
        texts.append(record.text)
        doc_bytes.append(record.n_bytes)
        groups.append(record.group)
    words, misses = _encoder.words, _encoder.misses
    flat, doc_tokens = _encoder.encode_documents(texts, _encoder.processor.eos_id())
    return Batch(
        flat,
        doc_tokens,
        np.array(doc_bytes, dtype=np.uint64),
        groups,
        bad,
        _encoder.words - words,
        _encoder.misses - misses,
        sum(SPACE in text for text in texts),
    )


class _Inline:
    """The single-worker path: encode in this process, no pickling, same code, same interface as
    pipeline.core.workers.OrderedPool."""

    def __init__(self, model: str, dtype: str, fields: Fields):
        _load_encoder(model, dtype, fields)
        self.done: deque[Batch] = deque()

    def submit(self, *task) -> None:
        self.done.append(encode_batch(*task))

    def pending(self) -> int:
        return len(self.done)

    def next_result(self) -> Batch:
        return self.done.popleft()

    def close(self) -> None:
        pass


def _executor(model: str, dtype: str, fields: Fields, workers: int) -> _Inline | OrderedPool:
    if workers == 1:
        return _Inline(model, dtype, fields)
    return OrderedPool(encode_batch, workers, _load_encoder, (model, dtype, fields), hint=WORKER_DIED_HINT)


def _batches(reader: Reader, batch_bytes: int):
    """(first line or row number, items) groups of about `batch_bytes` of raw JSON or text each."""
    batch, size, first = [], 0, 1
    for number, item in reader.items():
        if not batch:
            first = number
        batch.append(item)
        size += len(item) if isinstance(item, bytes) else len(item[0] or "")
        if size >= batch_bytes:
            yield first, batch
            batch, size = [], 0
    if batch:
        yield first, batch


def run(
    raw: list[Path],
    model: Path,
    output: Path,
    params: PretokenizeParams,
    on_bad_record: str = "error",
    fields: Fields = PILE_FIELDS,
) -> dict:
    """Tokenize the files `raw`, in order, into `output` (.bin), its .idx, .docs and .json; return the
    metadata, with timings for the summary. `on_bad_record`: stop at the first malformed record
    (`error`) or count and skip them (`skip`)."""
    processor = _checked_processor(model, params.dtype)
    encoder_path = pieces.path(pieces.read(model))  # the workers' choice, made without loading it
    readers = [open_reader(path, fields) for path in raw]  # every file opened (and checked) before any work
    started = time.monotonic()
    workers = params.workers or usable_cores()
    executor = _executor(str(model), params.dtype, fields, workers)
    seen = _Seen(readers, on_bad_record)
    try:
        with TokenWriter(output, params.dtype) as writer:
            for batch in _in_order(executor, readers, params.batch_bytes, workers):
                seen.add(batch)
                writer.add(batch.tokens, batch.doc_tokens, batch.doc_bytes, batch.groups)
            if writer.n_docs == 0:
                raise PipelineError(f"{describe(raw)}: contains no documents")
    finally:
        executor.close()
    metadata = writer.metadata(
        source=[str(path) for path in raw] if len(raw) > 1 else str(raw[0]),
        vocab_size=processor.get_piece_size(),
        eos_id=processor.eos_id(),
        tokenizer_sha256=files.sha256(model),
        group_field=fields.group,
        bad_records=dict(seen.bad_records),
        docs_with_space_marker=seen.marked,
    )
    files.write_json_atomic(token_files.metadata_path(output), metadata)
    seconds = time.monotonic() - started
    return {
        **metadata,
        "seconds": seconds,
        "workers": workers,
        "encoder": encoder_path.describe(seen.words, seen.misses),
    }


def _checked_processor(model: Path, dtype: str) -> spm.SentencePieceProcessor:
    """The tokenizer, refused before any work when its ids would not fit `dtype` or it has no separator."""
    processor = pieces.processor(model)
    token_files.check_dtype_fits(processor.get_piece_size(), dtype, model)
    if processor.eos_id() < 0:
        raise PipelineError(
            f"{model}: the tokenizer has no eos piece (eos_id: -1), so documents would "
            "bleed into each other; set tokenizer.eos_id and eos_piece to a free id and rerun"
        )
    return processor


def _in_order(executor, readers: list[Reader], batch_bytes: int, workers: int) -> Iterator[Batch]:
    """Every batch of every file, encoded, in order; at most 2 x workers batches in flight."""
    total_size = sum(reader.size for reader in readers)
    with progress.bar(total_size, f"pretokenize {readers[0].path.name}") as pbar:
        read_before = 0  # bytes of the files before the one being read
        for file_index, reader in enumerate(readers):
            for first, items in _batches(reader, batch_bytes):
                executor.submit(file_index, first, items)
                pbar.update(read_before + reader.position - pbar.n)
                if executor.pending() >= 2 * workers:
                    yield executor.next_result()
            read_before += reader.size
        while executor.pending():
            yield executor.next_result()


@dataclass
class _Seen:
    """What the batches report besides their tokens: bad records (stop, or count), the cache's words
    and misses, documents holding the whitespace marker."""

    readers: list[Reader]
    on_bad_record: str
    bad_records: Counter = field(default_factory=Counter)
    words: int = 0
    misses: int = 0
    marked: int = 0

    def add(self, batch: Batch) -> None:
        for file_index, number, kind, message in batch.bad:
            if self.on_bad_record == "error":
                reader = self.readers[file_index]
                raise PipelineError(bad_record_message(reader.path, reader.unit, number, message))
            self.bad_records[kind] += 1
        self.words += batch.words
        self.misses += batch.misses
        self.marked += batch.marked


def run_stage(p: Params, key: str) -> None:
    """The pretokenize@KEY stage: token array, index, documents and metadata, then a summary. A key whose
    shard is an existing Megatron pair is imported as it is (pipeline.encode.megatron_import)."""
    if formats.is_megatron(layout.shard(p.data, key)):
        megatron_import.run_stage(p, key)
        return
    raw, output = formats.raw_files(p.data, key), layout.tokens_path(key)
    fields = Fields(p.data.text_field, p.data.group_field)
    meta = run(raw, TOKENIZER_DIR / "spm.model", output, p.pretokenize, p.data.on_bad_record, fields)
    seconds = meta["seconds"]
    skipped = sum(meta["bad_records"].values())
    progress.summary(
        f"pretokenize@{key}",
        {
            "from": describe(raw),
            "to": f"{output} ({meta['dtype']}), {token_files.index_path(output).name} (Megatron's index), "
            f"{token_files.docs_path(output).name}, {token_files.metadata_path(output).name}",
            "documents": f"{meta['n_docs']:,}"
            + (f" ({skipped:,} bad records skipped: {meta['bad_records']})" if skipped else "")
            + (
                f"; {meta['docs_with_space_marker']:,} hold U+2581 (▁), which decodes as a space"
                if meta["docs_with_space_marker"]
                else ""
            ),
            "tokens": f"{meta['n_tokens']:,} ({meta['n_tokens'] / max(meta['n_bytes'], 1):.3f} per byte of text)",
            "speed": f"{meta['n_bytes'] / max(seconds, 1e-9) / 1e6:.2f} MB/s of text with {meta['workers']} "
            f"workers ({seconds:.1f} s)",
            "encoder": meta["encoder"],
        },
    )
