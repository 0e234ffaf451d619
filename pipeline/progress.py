"""Progress bars and end-of-stage summaries, in one place so every stage looks the same."""

import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline import files


def bar(total: float | None, desc: str, unit: str = "B", initial: float = 0) -> tqdm:
    """A bar with rate and ETA on stderr; redrawn rarely when stderr is a log file, not a terminal."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, unit_divisor=1000, initial=initial,
                file=sys.stderr, mininterval=0.2 if interactive else 15, dynamic_ncols=interactive,
                disable=os.environ.get("PILE_GPT_PROGRESS") == "0")


def summary(title: str, rows: dict[str, Any]) -> None:
    """Print a short aligned table: what a stage did, at a glance."""
    width = max(map(len, rows), default=0)
    lines = [f"== {title} =="] + [f"  {key:<{width}}  {value}" for key, value in rows.items()]
    print("\n".join(lines), flush=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write sorted, indented JSON to a temporary name and rename, so readers never see half a file."""
    with files.replacing(path) as (tmp,):
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
