"""DVC stage evaluate: loss, perplexity and bits per byte of the exported model on val and test."""

import argparse

from pipeline.config.load import load_params
from pipeline.core import cli
from pipeline.evaluation import evaluate


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    evaluate.run_stage(load_params())


if __name__ == "__main__":
    cli.run(main)
