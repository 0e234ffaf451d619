"""DVC stage train: train the GPT on every train token array with Lightning, then export it."""

import argparse

from pipeline.config.load import load_params
from pipeline.core import cli
from pipeline.training import train


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    train.run_stage(load_params())


if __name__ == "__main__":
    cli.run(main)
