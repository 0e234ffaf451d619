"""How every stage and command starts and ends: a message instead of a traceback, a clean stop on signals."""

import signal
import sys
from collections.abc import Callable

from pipeline.core.errors import PipelineError, Stopped


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # so `finally` blocks remove temporaries and stop workers on SIGTERM too


def run(main: Callable[[], None]) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except Stopped as exc:
        print(f"stopped: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file that cannot be read or written: its name and the reason suffice
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: nothing was written to the outputs", file=sys.stderr, flush=True)
        sys.exit(130)
