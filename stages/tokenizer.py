"""DVC stage tokenizer: a SentencePiece model from the corpus, by the exact trainer or spm_train (tokenizer.trainer)."""

import argparse

from pipeline.config.load import load_params
from pipeline.core import cli
from pipeline.tokenizer import train


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    train.run_stage(load_params())


if __name__ == "__main__":
    cli.run(main)
