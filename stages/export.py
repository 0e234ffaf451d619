"""DVC stage export: the trained model as a Hugging Face transformers model in data/model/hf/, checked."""

import argparse

from pipeline.config.load import load_params
from pipeline.core import cli
from pipeline.export import hf


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    hf.run_stage(load_params())


if __name__ == "__main__":
    cli.run(main)
