"""DVC stage export: the trained model as a Hugging Face transformers model in data/model/hf/, checked."""

import argparse

from pipeline import cli, export, params


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    export.run_stage(params.load())


if __name__ == "__main__":
    cli.run(main)
