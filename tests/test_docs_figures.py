"""The figures README and docs/ state about the sample are the recorded ones: bits per byte from
metrics/eval.json (what `make run` makes, byte for byte in CI), times and earlier runs from
bench/results/sample.json (`python bench/make_run.py` measures `make run` and rewrites its entry).
Retrain or re-measure, and this test names every sentence to update."""

import json
import re

import pytest
import yaml

from tests.helpers import REPO

METRICS = json.loads((REPO / "metrics/eval.json").read_text())
SAMPLE = json.loads((REPO / "bench/results/sample.json").read_text())
EARLIER = SAMPLE["earlier"]
RESULTS_TABLES = ["README.md", "docs/training.md"]  # "Results on the embedded sample"
STEPS = yaml.safe_load((REPO / "params.yaml").read_text())["train"]["max_steps"]  # what make run trains


def row(doc: str, starts: str) -> list[str]:
    """The cells after the first of the table row that starts with `starts`."""
    found = [line for line in (REPO / doc).read_text().splitlines() if line.startswith(f"| {starts}")]
    assert len(found) == 1, f"{doc}: {len(found)} table rows start with {starts!r}"
    return [cell.strip() for cell in found[0].strip("|").split("|")[1:]]


def one(doc: str, pattern: str) -> re.Match:
    found = list(re.finditer(pattern, (REPO / doc).read_text()))
    assert len(found) == 1, f"{doc}: {len(found)} matches of {pattern!r}"
    return found[0]


@pytest.mark.parametrize("doc", RESULTS_TABLES)
def test_the_samples_bits_per_byte_in_the_docs_are_the_committed_metrics(doc):
    stated = row(doc, f"modern + Muon, {STEPS} steps (params.yaml)")
    assert stated == [f"{METRICS['val']['bpb']:.4f}", f"{METRICS['test']['bpb']:.4f}"], doc
    before = EARLIER["modern + muon, 300 steps"]
    stated_before = row(doc, "modern + Muon, 300 steps (before")
    assert stated_before == [f"{before['val_bpb']:.4f}", f"{before['test_bpb']:.4f}"], doc
    earlier = EARLIER["gpt2 + adamw, 300 steps"]
    assert row(doc, "GPT-2 + AdamW, 300 steps") == [f"{earlier['val_bpb']:.4f}", f"{earlier['test_bpb']:.4f}"], doc


def test_the_time_of_make_run_and_of_its_stages_are_the_recorded_ones():
    run = SAMPLE["make_run"]
    minutes = one("README.md", r"embedded sample \(~(\d+) min on 2 cores\)")
    assert int(minutes.group(1)) == round(run["minutes"])
    times = one("docs/training.md", r"training (\d+) s,\s+evaluation (\d+) s")
    assert [int(x) for x in times.groups()] == [round(run["stages"]["train"]), round(run["stages"]["evaluate"])]
    for doc in RESULTS_TABLES:
        one(doc, rf"{STEPS:,} steps of 16 × 256 tokens")
    gpt2 = one("docs/training.md", r"lr 0\.002; training (\d+) s\)")
    assert int(gpt2.group(1)) == EARLIER["gpt2 + adamw, 300 steps"]["training_s"]


def test_the_harness_comparison_names_the_recorded_figures():
    harness = EARLIER["harness on that model"]
    stated = one("docs/export.md", r"the harness\s+gives val \*\*([\d.]+)\*\* bits per byte against \*\*([\d.]+)\*\*")
    assert [float(x) for x in stated.groups()] == [harness["harness_val_bpb"], harness["evaluate_val_bpb"]]
