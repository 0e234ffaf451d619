"""DVC stage evaluate: loss, perplexity and bits per byte of the exported model on val and test."""

import argparse

from pipeline import cli, evaluate, params


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    evaluate.run_stage(params.load())


if __name__ == "__main__":
    cli.run(main)
