"""DVC stage words@KEY: the word-count table of corpus part KEY, as spm_train would count its lines."""

import argparse

from pipeline.config.load import load_params
from pipeline.core import cli
from pipeline.tokenizer import word_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("key", help="a key of corpus.shards in params.yaml, e.g. 00")
    args = ap.parse_args()
    word_counts.run_stage(load_params(), args.key)


if __name__ == "__main__":
    cli.run(main)
