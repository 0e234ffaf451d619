"""DVC stage tokenizer: train SentencePiece on the corpus with the flags under `tokenizer:`."""

import argparse

from pipeline.config.load import load_params
from pipeline.core import cli
from pipeline.tokenizer import spm_train


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    spm_train.run_stage(load_params())


if __name__ == "__main__":
    cli.run(main)
