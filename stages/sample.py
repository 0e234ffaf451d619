"""Print a continuation of a prompt from the exported model (data/model)."""

import argparse

from pipeline import cli, sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", default="", help="text to continue (empty: start after a document separator)")
    ap.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate")
    ap.add_argument("--temperature", type=float, default=0.8, help="0 picks the likeliest token every time")
    ap.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens; 0 for all")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampler, for repeatable output")
    ap.add_argument("--model-dir", default="data/model", help="directory of model.safetensors, config.json, tokenizer.model")
    args = ap.parse_args()
    print(sample.continue_text(args.model_dir, args.prompt, args.max_new_tokens, args.temperature,
                               args.top_k or None, args.seed))


if __name__ == "__main__":
    cli.run(main)
