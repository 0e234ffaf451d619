"""DVC stage tokenizer: train SentencePiece on the corpus with the flags under `tokenizer:`."""

import argparse

from pipeline import cli, params, tokenizer


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    tokenizer.run_stage(params.load())


if __name__ == "__main__":
    cli.run(main)
