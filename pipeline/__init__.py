"""pile-gpt: a reproducible, cached, staged pipeline that pretrains GPT models on the Pile.

Layers, bottom to top; a module imports only from its own folder and the folders below it
(tests/test_layers.py walks every import):

    core        errors, how stages start and stop, progress, whole-or-nothing files, workers, pictures
    config      params.yaml's schema, loading and rules; paths; the formats and flags params may name
    ingest      documents from any corpus file; downloads
    tokenizer   the tokenizer's training text and its training; what a model's pieces allow
    encode      token arrays (Megatron's index): the exact encoder, its compiled BPE, pretokenize, imports
    model       the GPT (no Lightning)
    training    windows over the arrays, the Lightning module, optimizers, callbacks, resume, train
    evaluation  bits per byte, lm-evaluation-harness, sampling
    export      the model as a Hugging Face transformers model
    ops         the `pile-gpt` command, dvc.lock merged stage by stage
"""

# Modules that cannot change an output's bytes: messages, start and stop, progress bars,
# whole-or-nothing writes, machine facts; params' declarations, loading and rules (they accept or
# refuse params, never change a value; every field must be in the file, so no default decides an
# output). No stage lists them in dvc.yaml (tests/test_deps.py), and no checkpoint records them.
NEUTRAL_MODULES = frozenset(
    {
        "core.errors",
        "core.cli",
        "core.progress",
        "core.files",
        "core.machine",
        "config.load",
        "config.rules",
        "config.schema",
    }
)
