"""DVC stage word-rules: what decides the word-count tables (normalization, word cutting, meta pieces)."""

import argparse

from pipeline.config.load import load_params
from pipeline.core import cli
from pipeline.tokenizer import word_counts


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    word_counts.run_rules_stage(load_params())


if __name__ == "__main__":
    cli.run(main)
