"""Fixtures: a real SentencePiece model, a real HTTP server on 127.0.0.1, a repository after `dvc repro`."""

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.tokenizer import spm_train
from tests.helpers import LOSSLESS_FLAGS, sample_documents


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """`make test` runs pytest-xdist's workers (`-n auto --dist loadgroup`): keep together what shares
    an expensive fixture, every test that reads the built repository in one worker, which builds it
    once, and each other module's tests in one worker, for its module-scoped fixtures."""
    for item in items:
        group = "built" if "built" in item.fixturenames else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """A lossless 1,000-piece BPE model trained on the sample's val text (a few seconds)."""
    work = tmp_path_factory.mktemp("tokenizer")
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(line for text in sample_documents("val") for line in text.split("\n") if line) + "\n")
    spm_train.train([corpus], work / "spm", LOSSLESS_FLAGS)
    return work / "spm.model"


@dataclass
class Behaviour:
    """How the test server answers; tests change it, then read what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    range_support: bool = True
    drop_after: int | None = None  # close the first body response after this many bytes
    faults: list[tuple[str, int]] = field(default_factory=list)
    """Scripted misbehaviour of the next body responses, one each, in order: ("drop", n) closes after
    n bytes, ("stall", n) goes silent for `stall_s` after n bytes, ("long", n) / ("short", n) states a
    Content-Length n bytes longer / shorter than what it sends."""
    stall_s: float = 2.0
    fail_statuses: list[int] = field(default_factory=list)  # answered, in order, before any success
    retry_after: str | None = None
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)  # (path, headers) of every request seen


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        b: Behaviour = self.server.behaviour
        b.requests.append({"path": self.path, "headers": dict(self.headers)})
        if self.path in b.redirects:
            self.send_response(302)
            self.send_header("Location", b.redirects[self.path])
            for name, value in b.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if b.fail_statuses:
            status = b.fail_statuses.pop(0)
            self.send_response(status)
            if b.retry_after:
                self.send_header("Retry-After", b.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        range_header = self.headers.get("Range")
        if b.range_support and range_header and range_header.startswith("bytes="):
            start = int(range_header[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        fault, amount = b.faults.pop(0) if b.faults else (None, 0)
        if b.drop_after is not None:
            fault, amount, b.drop_after = "drop", b.drop_after, None
        stated = len(payload) + {"long": amount, "short": -amount}.get(fault, 0)
        if fault == "short":
            payload = payload[:stated]  # a body that ends where its (wrong) length says
        self.send_header("Content-Length", str(stated))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if fault in ("drop", "stall"):
            self.wfile.write(payload[:amount])
            self.wfile.flush()
            if fault == "stall":
                threading.Event().wait(b.stall_s)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(payload)
        if fault == "long":
            self.close_connection = True
            self.connection.shutdown(2)


@pytest.fixture
def http_server():
    """A real HTTP/1.1 server on 127.0.0.1 with a Behaviour to script it; yields (base URL, behaviour)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.behaviour = Behaviour()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.behaviour
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A copy of the repository after one full `dvc repro` on the sample (with a tiny model)."""
    from tests.repo import SHARDS, edit_params, fresh_copy, run, stages_run, tiny_training

    repo = fresh_copy(tmp_path_factory.mktemp("built"))
    edit_params(repo, tiny_training)
    run(repo, "git", "commit", "-qam", "tiny model")
    result = run(repo, "dvc", "repro")
    assert stages_run(result) == {f"download@{k}" for k in SHARDS} | {
        "corpus@00",
        "corpus@01",
        "word-rules",
        "words@00",
        "words@01",
        "tokenizer",
    } | {f"pretokenize@{k}" for k in SHARDS} | {"train", "export", "evaluate"}
    return repo
