"""Progress bars and end-of-stage summaries, in one place so every stage looks the same."""

import os
import sys
from typing import Any

from tqdm import tqdm

QUIET_ENV = "PILE_GPT_PROGRESS"  # set to 0: no progress bars (tests, logs, --quiet)


def bar(total: float | None, desc: str, unit: str = "B", initial: float = 0, disable: bool = False) -> tqdm:
    """A bar with rate and ETA on stderr; redrawn rarely when stderr is a log file, not a terminal."""
    interactive = sys.stderr.isatty()
    # units of size get k/M/G; whole things counted one by one (steps) stay plain integers
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit != "step",
        unit_divisor=1000,
        initial=initial,
        file=sys.stderr,
        mininterval=0.2 if interactive else 15,
        dynamic_ncols=interactive,
        disable=disable or os.environ.get(QUIET_ENV) == "0",
    )


def summary(title: str, rows: dict[str, Any]) -> None:
    """Print a short aligned table: what a stage did, at a glance."""
    width = max(map(len, rows), default=0)
    lines = [f"== {title} =="] + [f"  {key:<{width}}  {value}" for key, value in rows.items()]
    print("\n".join(lines), flush=True)


def note(message: str) -> None:
    """One line on stderr between progress bar redraws (an event of a long step, not its summary)."""
    tqdm.write(message, file=sys.stderr)
