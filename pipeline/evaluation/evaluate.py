"""Loss, perplexity and bits per byte on a whole token array, overall and per group (data.group_field).

Bits per byte is the Pile paper's tokenizer-independent measure: the summed negative
log-likelihood of every token, in nats, over the UTF-8 bytes of the documents, divided by ln 2.
The stream is read as [eos] + tokens in windows of block_size, so every token is predicted exactly
once (the first from the separator, as if a document had just ended). A token's loss counts for
the document it belongs to, its trailing separator included; memory holds one float per document.
"""

import math
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import layout
from pipeline.config.layout import METRICS_DIR, MODEL_DIR, STATS_DIR
from pipeline.config.schema import Params
from pipeline.core import files, plots, progress
from pipeline.encode import token_files
from pipeline.model.gpt import GPT, cross_entropy

EVAL_METRICS = METRICS_DIR / "eval.json"  # headline numbers, for `dvc metrics show` and `dvc exp show`
EVAL_STATS = STATS_DIR / "eval.json"  # everything, per split and group
EVAL_PLOT = METRICS_DIR / "eval.png"


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    return nll_nats / n_bytes / math.log(2)


def summarise(nll: float, n_tokens: int, n_bytes: int) -> dict:
    loss = nll / n_tokens
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bpb": bits_per_byte(nll, n_bytes),
        "tokens": n_tokens,
        "bytes": n_bytes,
    }


@torch.no_grad()
def evaluate_array(model: GPT, bin_path: Path, batch_size: int, device: str = "cpu") -> dict:
    """Every token of `bin_path` scored once; totals and per-set figures from its documents (.idx, .docs)."""
    meta, ids, documents = (
        token_files.read_metadata(bin_path),
        token_files.open_tokens(bin_path),
        token_files.open_documents(bin_path),
    )
    block = model.config.block_size
    n = len(ids)
    doc_starts = documents.starts
    doc_nll = np.zeros(len(doc_starts), dtype=np.float64)
    n_windows = math.ceil(n / block)
    model.eval()
    with progress.bar(n_windows, f"evaluate {bin_path.name}", unit="window") as pbar:
        for first in range(0, n_windows, batch_size):
            windows = range(first, min(first + batch_size, n_windows))
            width = min(block, n - windows[0] * block)  # the last batch may hold a short window
            starts = np.array([w * block for w in windows])
            lengths = np.minimum(n - starts, block)
            targets = np.zeros((len(starts), width), dtype=np.int64)
            inputs = np.full((len(starts), width), meta["eos_id"], dtype=np.int64)
            for row, (start, length) in enumerate(zip(starts, lengths)):
                targets[row, :length] = ids[start : start + length]
                inputs[row, 1:length] = ids[start : start + length - 1]
                if start:
                    inputs[row, 0] = ids[start - 1]
            x = torch.from_numpy(inputs).to(device)
            y = torch.from_numpy(targets).to(device)
            nll = cross_entropy(model(x), y, reduction="none").view(len(starts), width).double().cpu().numpy()
            scored = np.arange(width) < lengths[:, None]  # (b, width): a short last window's padding is not
            positions = (starts[:, None] + np.arange(width))[scored]  # row by row, as the windows read
            docs = np.searchsorted(doc_starts, positions, side="right") - 1
            np.add.at(doc_nll, docs, nll[scored])  # in the same order, so the same float sums
            pbar.update(len(starts))
    doc_tokens = np.diff(np.append(doc_starts, n))
    result = summarise(float(doc_nll.sum()), n, int(documents.n_bytes.sum()))
    result["per_group"] = {}
    for set_id, name in enumerate(meta["groups"]):
        mine = documents.set_id == set_id
        result["per_group"][name] = summarise(
            float(doc_nll[mine].sum()), int(doc_tokens[mine].sum()), int(documents.n_bytes[mine].sum())
        )
    return result


def headline(results: dict) -> dict:
    """Bits per byte and loss per split: what `dvc metrics show` and `dvc exp show` put side by side.
    Per-group figures would not fit a terminal (the Pile has 22 groups): they are in the stats file
    and the bar chart."""
    return {split: {"bpb": r["bpb"], "loss": r["loss"]} for split, r in results.items()}


def run_stage(p: Params) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = GPT.from_pretrained(MODEL_DIR, device=device)
    token_files.check_folder(layout.TOKENS_DIR, list(p.data.shards), "evaluate")
    paths = {key: layout.tokens_path(key) for key in p.evaluate.splits}
    token_files.check_arrays(list(paths.values()), MODEL_DIR / "tokenizer.model", model.config.vocab_size)
    started = time.monotonic()
    results = {key: evaluate_array(model, path, p.evaluate.batch_size, device) for key, path in paths.items()}
    files.write_json_atomic(EVAL_STATS, results)
    files.write_json_atomic(EVAL_METRICS, headline(results))
    plots.bits_per_byte(
        {
            split: {"all": r["bpb"], **{name: s["bpb"] for name, s in r["per_group"].items()}}
            for split, r in results.items()
        },
        EVAL_PLOT,
    )
    rows = {}
    for key, r in results.items():
        rows[key] = (
            f"loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f}, {r['bpb']:.4f} bits per byte "
            f"({r['tokens']:,} tokens, {r['bytes']:,} bytes)"
        )
        for name, s in r["per_group"].items():
            rows[f"  {key}: {name}"] = f"{s['bpb']:.4f} bits per byte ({s['tokens']:,} tokens)"
    rows["reference"] = "Pile test BPB in the Pile paper: GPT-2 small 1.2253, GPT-3 davinci 0.7177"
    rows["written"] = f"{EVAL_METRICS} (headline), {EVAL_STATS} (all figures), {EVAL_PLOT}"
    rows["time"] = f"{time.monotonic() - started:.0f} s on {device}"
    progress.summary("evaluate", rows)
