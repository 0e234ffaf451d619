"""The `pile-gpt` console command, for what is not a DVC stage (the pipeline itself runs with `dvc repro`)."""

import argparse
import sys

from pipeline.core import cli


def _sample(args: argparse.Namespace) -> None:
    from pipeline.evaluation import sample  # torch loads only for the subcommand that needs it

    print(
        sample.continue_text(
            args.model_dir, args.prompt, args.max_new_tokens, args.temperature, args.top_k or None, args.seed
        )
    )


def _harness(args: argparse.Namespace) -> None:
    from pipeline.config import formats
    from pipeline.config.load import load_params
    from pipeline.evaluation import harness
    from pipeline.ingest.records import Fields

    p = load_params()
    raw = {split: formats.raw_files(p.data, split) for split in args.splits or p.evaluate.splits}
    harness.run(raw, Fields(p.data.text_field, p.data.group_field), args.tasks, args.batch_size)


def _gather(args: argparse.Namespace) -> None:
    from pipeline.ops import gather

    commit = gather.gather(args.refs)
    print(f"gathered {', '.join(args.refs)} into {commit[:12]}; now `dvc pull` brings their outputs")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pile-gpt",
        description="Pretrain GPT models on the Pile, driven by DVC. The pipeline itself runs "
        "with `dvc repro` (stages in dvc.yaml); these commands work with what it made.",
    )
    commands = top.add_subparsers(title="commands", dest="command", required=True)
    sample = commands.add_parser(
        "sample",
        help="continue a prompt with the trained model (data/model)",
        description="Print a continuation of a prompt from the exported model.",
    )
    sample.add_argument("--prompt", default="", help="text to continue (empty: start after a document separator)")
    sample.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate")
    sample.add_argument("--temperature", type=float, default=0.8, help="0 picks the likeliest token every time")
    sample.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens; 0 for all")
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampler, for repeatable output")
    sample.add_argument(
        "--model-dir", default="data/model", help="directory of model.safetensors, config.json, tokenizer.model"
    )
    sample.set_defaults(handler=_sample)
    harness = commands.add_parser(
        "harness",
        help="score data/model/hf with lm-evaluation-harness, offline, on val and test",
        description="Run EleutherAI's lm-evaluation-harness on the exported model: bits per byte on the "
        "held-out documents, per split and group (metrics/harness.json), plus any standard tasks named.",
    )
    harness.add_argument("--splits", nargs="*", help="shard keys to score (default: evaluate.splits)")
    harness.add_argument("--tasks", nargs="*", default=[], help="standard harness tasks too, e.g. hellaswag")
    harness.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    harness.set_defaults(handler=_harness)
    gather = commands.add_parser(
        "gather",
        help="merge workers' branches, dvc.lock stage by stage (make gather REFS=...)",
        description="Merge the given refs into the current branch; dvc.lock entries are combined per stage, "
        "and a stage two refs prepared differently stops the gather, leaving the repository as it was.",
    )
    gather.add_argument("refs", nargs="+", help="workers' branches or other git refs")
    gather.set_defaults(handler=_gather)
    commands.add_parser(  # its own flags are spm_train's, parsed as spm_train parses them (main)
        "spm-train",
        help="train a BPE tokenizer exactly as spm_train would, from spm_train's own flags, in far less memory",
        add_help=False,
    )
    return top


def main(argv: list[str] | None = None) -> None:
    """The `pile-gpt` console command (pyproject.toml's [project.scripts])."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["spm-train"]:
        from pipeline.tokenizer import spm_train_command

        cli.run(lambda: spm_train_command.run(argv[1:]))
        return
    args = parser().parse_args(argv)
    cli.run(lambda: args.handler(args))
