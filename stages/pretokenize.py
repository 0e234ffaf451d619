"""DVC stage pretokenize@KEY: tokenize one shard into data/tokens/ (.bin, .idx, .docs, .json)."""

import argparse

from pipeline.config.load import load_params
from pipeline.core import cli
from pipeline.encode import pretokenize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("key", help="a key of data.shards in params.yaml, e.g. 00 or val")
    args = ap.parse_args()
    pretokenize.run_stage(load_params(), args.key)


if __name__ == "__main__":
    cli.run(main)
