"""Outputs that appear whole or not at all, even across a power cut or a full disk.

Every stage writes under a temporary name beside the output (`<name>.tmp`, which .dvcignore keeps
out of DVC's directory hashes), flushes it to disk, renames it over the output and flushes the
directory. A reader, DVC included, sees the previous file or the complete new one, never a part.
The temporary names are fixed, not random, so a rerun after a crash overwrites what was left.
"""

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError

TMP_SUFFIX = ".tmp"
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
HASH_CHUNK = 1 << 20


def _move_across_filesystems(tmp: Path, output: Path) -> None:
    """A temporary on another filesystem than its output (a download's partial file, kept outside
    the output directory): copied beside the output first, so the output is still replaced whole."""
    near = temporary(output)
    try:
        shutil.copyfile(tmp, near)
        with open(near, "rb") as f:
            os.fsync(f.fileno())
    except OSError as exc:
        near.unlink(missing_ok=True)
        if exc.errno in NO_ROOM:
            raise no_room(output, exc) from None
        raise
    os.replace(near, output)
    tmp.unlink()


def input_size(path: Path) -> int:
    """The size of an input that must exist and hold something; PipelineError naming it otherwise."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file") from None
    if size == 0:
        raise PipelineError(f"{path}: empty file (0 bytes)")
    return size


def strays(directory: Path, expected: set[str]) -> list[Path]:
    """What `directory` holds besides the `expected` names and the temporaries of an interrupted write
    (which .dvcignore keeps out of DVC's hashes)."""
    if not directory.is_dir():
        return []
    return [path for path in sorted(directory.iterdir()) if path.name not in expected and TMP_SUFFIX not in path.name]


def temporary(output: Path) -> Path:
    return output.with_name(output.name + TMP_SUFFIX)


def publish(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each (temporary, output), in order, after forcing the data to disk."""
    for tmp, _ in pairs:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    for tmp, output in pairs:
        try:
            os.replace(tmp, output)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _move_across_filesystems(tmp, output)
    for directory in {output.parent for _, output in pairs}:
        _fsync_directory(directory)


@contextmanager
def replacing(*outputs: Path) -> Iterator[list[Path]]:
    """Yield a temporary path per output; when the block ends without error, publish them in the
    order given (put last the file whose presence means the set is complete); on any error remove
    them. A full disk becomes a PipelineError naming the output, whose previous version is untouched."""
    temps = [temporary(output) for output in outputs]
    for output in outputs:
        output.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
        publish(list(zip(temps, outputs)))
    except OSError as exc:
        if exc.errno in NO_ROOM:
            raise no_room(outputs[-1], exc) from None
        raise
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextmanager
def replacing_directory(output: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `output`; when the block ends without error, flush
    its files and put it in place of `output` (the previous one, if any, is moved aside first and
    removed after, so a reader sees the old directory or the whole new one). On any error, remove it;
    a full disk becomes a PipelineError naming `output`."""
    tmp, old = temporary(output), output.with_name(output.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        shutil.rmtree(old, ignore_errors=True)
        if output.exists():
            os.replace(output, old)
        os.replace(tmp, output)
        _fsync_directory(output.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        if exc.errno in NO_ROOM:
            raise no_room(output, exc) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # the renames themselves survive a power cut
    finally:
        os.close(descriptor)


def no_room(output: Path, exc: OSError) -> PipelineError:
    return PipelineError(
        f"{output}: cannot write it: {os.strerror(exc.errno)} in {output.parent}; "
        "the previous version, if any, is untouched: free some space and rerun"
    )


def write_json(path: Path, data: Any) -> None:
    """Sorted, indented JSON, the same bytes for the same data (inside a directory being replaced whole)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_json_atomic(path: Path, data: Any) -> None:
    """write_json to a temporary name, then renamed: readers never see half a file."""
    with replacing(path) as (tmp,):
        write_json(tmp, data)


def sha256(path: Path, on_progress: Callable[[int], object] | None = None) -> str:
    """The file's sha256, read a chunk at a time; `on_progress(n_bytes)` after each chunk."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            if on_progress is not None:
                on_progress(len(chunk))
    return digest.hexdigest()
