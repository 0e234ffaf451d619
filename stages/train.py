"""DVC stage train: train the GPT on every train token array with Lightning, then export it."""

import argparse

from pipeline import cli, params, train


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    train.run_stage(params.load())


if __name__ == "__main__":
    cli.run(main)
