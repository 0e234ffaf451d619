"""Facts about the machine a stage runs on: cores it may use and memory it may still take.

Neither can change an output's bytes (they size worker pools and refuse work that would not fit),
so this module is no stage's dependency in dvc.yaml.
"""

import os
from pathlib import Path

PROC_MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NO_LIMIT = 1 << 60  # cgroup v1 writes a huge number, not "max", when no limit is set


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which batch systems set), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory(meminfo: Path = PROC_MEMINFO, cgroup_root: Path = CGROUP_ROOT) -> int:
    """Bytes this process may still use: MemAvailable, capped by a cgroup limit when one is set
    (a container or a batch job sees the machine's memory in /proc but may use only its share)."""
    available = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):  # v1
        try:
            limit = (cgroup_root / limit_file).read_text().strip()
            if limit.isdigit() and int(limit) < NO_LIMIT:
                headroom = int(limit) - int((cgroup_root / usage_file).read_text().strip())
                available = headroom if available is None else min(available, headroom)
            break
        except (OSError, ValueError):
            continue
    return available or 0
