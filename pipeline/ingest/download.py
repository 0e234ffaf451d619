"""Fetch one shard from a mirror: resumable, retried, verified, and never half-written.

Bytes stream into a `.part` file outside the stage's output directory (DVC empties that before a
rerun), under data/raw/.partial/KEY/; its `.part.json` remembers the URL and the server's validator
(ETag or Last-Modified) so the next attempt, or the next run after a crash, asks only for the rest
(`Range` with `If-Range`). A server that ignores Range, or whose file changed, sends it all again
and the download restarts cleanly from zero. Only a complete, verified file is renamed into place.
"""

import email.utils
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path

from pipeline.config import formats, layout
from pipeline.config.layout import RAW_DIR, STATS_DIR
from pipeline.config.schema import DownloadParams, Params
from pipeline.core import files, progress
from pipeline.core.errors import PipelineError

COPY_CHUNK = 1 << 20
MAX_REDIRECTS = 10
MAX_BACKOFF_S = 60.0
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
PARTIAL_DIR = RAW_DIR / ".partial"  # unfinished downloads, kept for resume outside every stage's output
SHA256_HEADER = "X-Linked-Etag"  # Hugging Face states an LFS file's sha256 here, before its redirect


@dataclass(frozen=True)
class Fetched:
    path: Path
    n_bytes: int
    sha256: str
    checked_against: str
    """Where the expected sha256 came from: `params`, `server`, or `none`."""
    retries: int


class _Retry(Exception):
    """A transient failure: wait (Retry-After when the server gave one) and resume."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # redirects are followed by hand, to drop credentials when the host changes


def redact(url: str) -> str:
    """The URL without user:password@ and without a query string (signed CDN links carry secrets)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def source_url(source: str, relative: str) -> str:
    return source.rstrip("/") + "/" + urllib.parse.quote(relative)


def fetch(
    source: str,
    relative: str,
    output: Path,
    expected_sha256: str | None,
    params: DownloadParams,
    log=lambda msg: print(msg, file=sys.stderr, flush=True),
    part: Path | None = None,
) -> Fetched:
    """Bring `<source>/<relative>` to `output`, verified; raise PipelineError with a clear message.
    `part`: where the bytes gather until complete (default: beside `output`)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    part = part or output.with_name(output.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    if source.startswith(("http://", "https://")):
        url = source_url(source, relative)
        server_sha256, retries = _http_download(url, part, params, log)
    else:
        local = (
            Path(
                urllib.request.url2pathname(urllib.parse.urlsplit(source).path)
                if source.startswith("file://")
                else source
            )
            / relative
        )
        _copy(local, part)
        server_sha256, retries = None, 0
    digest = _sha256(part)
    expected, checked_against = (expected_sha256, "params") if expected_sha256 else (server_sha256, "server")
    if expected and digest != expected:
        _discard(part)
        raise PipelineError(
            f"{output}: sha256 mismatch: got {digest}, expected {expected} (from "
            f"{'data.shards in params' if checked_against == 'params' else 'the server'}); "
            "the file was deleted: check data.source and the checksum, then rerun"
        )
    files.publish([(part, output)])
    _discard(part)
    return Fetched(output, output.stat().st_size, digest, checked_against if expected else "none", retries)


def _copy(local: Path, part: Path) -> None:
    if not local.is_file():
        raise PipelineError(
            f"{local}: no such file on the mirror; check data.source (or the shard's own source) and data.shards"
        )
    try:
        with (
            open(local, "rb") as src,
            open(part, "wb") as dst,
            progress.bar(local.stat().st_size, f"copy {local.name}") as pbar,
        ):
            while chunk := src.read(COPY_CHUNK):
                dst.write(chunk)
                pbar.update(len(chunk))
    except OSError as exc:
        if exc.errno in files.NO_ROOM:
            _discard(part)
            raise files.no_room(part.with_suffix(""), exc) from None
        raise


def _http_download(url: str, part: Path, params: DownloadParams, log) -> tuple[str | None, int]:
    """Download with resume and bounded retries; return the server's stated sha256 and retry count."""
    token = os.environ.get(params.auth_token_env) if params.auth_token_env else None
    retries = 0
    while True:
        try:
            return _attempt(url, part, token, params.timeout_s), retries
        except _Retry as exc:
            retries += 1
            have = part.stat().st_size if part.exists() else 0
            if retries > params.retries:
                raise PipelineError(
                    f"{redact(url)}: giving up after {params.retries} retries: {exc}; "
                    f"{have:,} bytes kept in {part}, rerun to resume"
                ) from None
            wait = (
                exc.retry_after
                if exc.retry_after is not None
                else min(params.backoff_s * 2 ** (retries - 1), MAX_BACKOFF_S)
            )
            log(f"download: {redact(url)}: {exc}; retry {retries}/{params.retries} in {wait:.1f}s from byte {have:,}")
            time.sleep(wait)


def _attempt(url: str, part: Path, token: str | None, timeout_s: float) -> str | None:
    sidecar = part.with_name(part.name + ".json")
    state = _load_sidecar(sidecar, url)
    offset = part.stat().st_size if part.exists() and state else 0
    headers = {"User-Agent": "pile-gpt-downloader", "Accept-Encoding": "identity"}
    if offset and state.get("validator"):
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = state["validator"]
    response, server_sha256 = _open(url, headers, token, timeout_s)
    with response:
        total = None
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                _discard(part)
                raise _Retry(f"server resumed at byte {start}, not {offset}; starting over")
        else:
            if offset:
                offset = 0
                print(
                    f"download: {redact(url)}: the server sent the whole file (no Range support "
                    "or the file changed); restarting from zero",
                    file=sys.stderr,
                )
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        validator = response.headers.get("ETag")
        if not validator or validator.startswith("W/"):
            validator = response.headers.get("Last-Modified")
        sidecar.write_text(json.dumps({"url": url, "validator": validator, "total": total}))
        received = offset
        try:
            with (
                open(part, "ab" if offset else "wb") as out,
                progress.bar(total, f"download {part.name[:-5]}", initial=offset) as pbar,
            ):
                while chunk := response.read(COPY_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    pbar.update(len(chunk))
        except (OSError, HTTPException) as exc:
            if isinstance(exc, OSError) and exc.errno in files.NO_ROOM:
                raise PipelineError(
                    f"{part.with_suffix('')}: cannot write it: {os.strerror(exc.errno)}; "
                    f"{received:,} bytes kept in {part}: free some space and rerun to resume"
                ) from None
            if isinstance(exc, OSError) and exc.errno is not None and not _is_network_error(exc):
                raise PipelineError(f"{part}: cannot write: {exc}") from None
            raise _Retry(f"connection lost at byte {received:,}: {exc.__class__.__name__} {exc}") from None
    if total is not None and received != total:
        if received > total:
            _discard(part)
        raise _Retry(f"connection closed at byte {received:,} of {total:,}")
    return server_sha256


def _open(url: str, headers: dict, token: str | None, timeout_s: float) -> tuple[HTTPResponse, str | None]:
    """GET with redirects followed by hand; the token is sent only to the mirror's own host."""
    opener = urllib.request.build_opener(_NoRedirect)
    origin_host = urllib.parse.urlsplit(url).netloc
    if token and urllib.parse.urlsplit(url).scheme == "http" and not _is_loopback(url):
        raise PipelineError(
            f"{redact(url)}: refusing to send the token from download.auth_token_env over "
            "plain http, where anyone on the way can read it; use an https:// mirror"
        )
    server_sha256 = None
    for _ in range(MAX_REDIRECTS + 1):
        request = urllib.request.Request(url, headers=headers)
        if token and urllib.parse.urlsplit(url).netloc == origin_host:
            request.add_unredirected_header("Authorization", f"Bearer {token}")
        try:
            response = opener.open(request, timeout=timeout_s)
        except urllib.error.HTTPError as exc:
            stated = (exc.headers.get(SHA256_HEADER) or "").strip('"').lower()
            if len(stated) == 64 and all(c in "0123456789abcdef" for c in stated):
                server_sha256 = stated
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                url = urllib.parse.urljoin(url, exc.headers["Location"])
                exc.close()
                if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                    raise PipelineError(
                        f"{redact(url)}: the mirror redirected to a {urllib.parse.urlsplit(url).scheme}: "
                        "URL; only http(s) redirects are followed"
                    ) from None
                continue
            raise _http_error(exc, url) from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if "Name or service not known" in str(reason) or "nodename nor servname" in str(reason):
                raise PipelineError(f"{redact(url)}: cannot resolve the host ({reason}); check data.source") from None
            raise _Retry(f"cannot connect: {reason}") from None
        return response, server_sha256
    raise PipelineError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects")


def _http_error(exc: urllib.error.HTTPError, url: str) -> Exception:
    exc.close()
    if exc.code in RETRY_STATUSES:
        return _Retry(f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers.get("Retry-After")))
    if exc.code == 416:
        return _Retry("HTTP 416: the partial file is longer than the server's; starting over")
    hint = {
        401: "the mirror wants credentials: set the variable named by download.auth_token_env",
        403: "access denied: check the token in download.auth_token_env and your access to the data",
        404: "not on the mirror: check data.source (or the shard's own source) and its path in data.shards",
    }
    return PipelineError(
        f"{redact(url)}: HTTP {exc.code} {exc.reason}; {hint.get(exc.code, 'a client error, not retried')}"
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return min(float(value), MAX_BACKOFF_S * 5)
    when = email.utils.parsedate_to_datetime(value)
    return None if when is None else max(0.0, min(when.timestamp() - time.time(), MAX_BACKOFF_S * 5))


def _content_range(value: str) -> tuple[int, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); an unknown total (`/*`) -> None."""
    try:
        unit, spec = value.split(" ", 1)
        span, total = spec.split("/")
        return int(span.split("-")[0]), None if total == "*" else int(total)
    except ValueError:
        raise _Retry(f"unreadable Content-Range {value!r}") from None


def _is_loopback(url: str) -> bool:
    return urllib.parse.urlsplit(url).hostname in ("localhost", "127.0.0.1", "::1")


def _is_network_error(exc: OSError) -> bool:
    return isinstance(exc, (ConnectionError, TimeoutError)) or exc.errno in (104, 110, 111, 113)


def _load_sidecar(sidecar: Path, url: str) -> dict:
    """What an earlier attempt learnt about this URL; a part file without it restarts from zero."""
    try:
        state = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    return state if state.get("url") == url else {}


def _sha256(path: Path) -> str:
    with progress.bar(path.stat().st_size, f"sha256 {path.name[:-5]}") as pbar:
        return files.sha256(path, pbar.update)


def _discard(part: Path) -> None:
    for path in (part, part.with_name(part.name + ".json")):
        path.unlink(missing_ok=True)


def run_stage(p: Params, key: str) -> None:
    """The download@KEY stage: fetch and verify every file of the key into data/raw/KEY/, write
    stats/download/KEY.json, print a summary."""
    shard, source = layout.shard(p.data, key), formats.source(p.data, key)
    names, outputs = formats.shard_files(shard), formats.raw_files(p.data, key)
    started = time.monotonic()
    fetched = []
    for i, (name, output) in enumerate(zip(names, outputs), 1):
        if len(names) > 1:
            print(f"download@{key}: file {i:,} of {len(names):,}: {name}", file=sys.stderr, flush=True)
        part = PARTIAL_DIR / key / (name + ".part")
        expected = shard.sha256 if i == 1 else None  # params check one file: a single shard, a Megatron pair's .bin
        fetched.append(fetch(source, name, output, expected, p.download, part=part))
    seconds = time.monotonic() - started
    files.write_json_atomic(
        STATS_DIR / "download" / f"{key}.json",
        {
            "files": [
                {"file": name, "bytes": f.n_bytes, "sha256": f.sha256, "sha256_checked_against": f.checked_against}
                for name, f in zip(names, fetched)
            ],
            "bytes": sum(f.n_bytes for f in fetched),
        },
    )
    _summary(key, redact(source_url(source, names[0])), outputs, fetched, seconds)


def _summary(key: str, first_url: str, outputs: list[Path], fetched: list[Fetched], seconds: float) -> None:
    n_bytes = sum(f.n_bytes for f in fetched)
    checked = Counter(f.checked_against for f in fetched)
    unverified = checked.get("none", 0)
    verification = ", ".join(f"{count:,} against {where}" for where, count in checked.items() if where != "none")
    progress.summary(
        f"download@{key}",
        {
            "from": first_url + (f" and {len(outputs) - 1:,} more files" if len(outputs) > 1 else ""),
            "to": outputs[0] if len(outputs) == 1 else RAW_DIR / key,
            "bytes": f"{n_bytes:,} in {seconds:.1f} s ({n_bytes / max(seconds, 1e-9) / 1e6:.1f} MB/s)",
            "sha256": (fetched[0].sha256 + " " if len(fetched) == 1 else "")
            + (f"verified {verification}" if verification else "")
            + (
                f"{'; ' if verification else ''}{unverified:,} not verified: no checksum in params or from the server"
                if unverified
                else ""
            ),
            "retries": sum(f.retries for f in fetched),
        },
    )
