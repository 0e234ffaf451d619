"""Fixtures: a real SentencePiece model, a real HTTP server on 127.0.0.1, a repository after `dvc repro`."""

import ast
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.config.schema import PretokenizeParams
from pipeline.encode import pretokenize
from pipeline.tokenizer import spm_train
from tests.helpers import LOSSLESS_FLAGS, SAMPLE, sample_documents

BUILT = "built"  # the session fixture that runs the whole pipeline once; its tests share one worker
CORES_SHARED = pytest.StashKey[int]()  # set when pytest_configure shared the cores: the worker count


def pytest_configure(config):
    """Each pytest-xdist worker gets its share of the cores for torch's OpenMP threads (and, through
    the environment, for the stages it starts); nothing here has imported torch yet, which reads it
    once. Unset, every worker's torch takes every core and OpenMP's spinning threads fight over
    them: the torch-heavy tests ran 1.9x slower on 2 workers (tests/test_schedule.py, test_loss.py
    and test_muon.py: 240-250 s against 116-132 s on 2 cores). A value the user set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
        config.stash[CORES_SHARED] = workers


def groups(tests: Path) -> dict[tuple[str, str], str]:
    """(module file, test function) -> its pytest-xdist work unit: BUILT for a test that requests
    the built repository, directly or through fixtures of its module; its module otherwise (for
    module-scoped fixtures). Read from the source, since the scheduler runs where nothing is collected."""
    found = {}
    for module in sorted(tests.glob("test_*.py")):
        functions = {
            node.name: {arg.arg for arg in node.args.args}
            for node in ast.parse(module.read_text()).body
            if isinstance(node, ast.FunctionDef)
        }
        uses = {name for name, args in functions.items() if BUILT in args}
        while grown := {name for name, args in functions.items() if args & uses} - uses:
            uses |= grown
        for name in functions:
            if name.startswith("test_"):
                found[(f"tests/{module.name}", name)] = BUILT if name in uses else f"tests/{module.name}"
    return found


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` as `make test` runs it: each work unit of `groups` to one worker, the built
    repository's first. pytest-xdist's own loadgroup reads `xdist_group` marks through node ids that
    pytest 9 no longer lets it change: every test of the built repository landed anywhere, and each
    worker built it."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    units = groups(config.rootpath / "tests")

    class TogetherScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module, _, test = nodeid.partition("::")
            return units.get((module, test.split("[")[0]), module)

        def _assign_work_unit(self, node) -> None:
            if BUILT in self.workqueue:  # the longest unit starts first, so it does not end last
                self.workqueue.move_to_end(BUILT, last=False)
            super()._assign_work_unit(node)

    return TogetherScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """The source reading of `groups` checked against pytest's own view of each test's fixtures."""
    units = groups(config.rootpath / "tests")
    for item in items:
        module, _, test = item.nodeid.partition("::")
        wanted = BUILT if BUILT in item.fixturenames else module
        if units.get((module, test.split("[")[0]), wanted) != wanted:
            raise pytest.UsageError(f"tests/conftest.py: groups() puts {item.nodeid} in the wrong work unit")


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """A lossless 1,000-piece BPE model trained on the sample's val text (a few seconds)."""
    work = tmp_path_factory.mktemp("tokenizer")
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(line for text in sample_documents("val") for line in text.split("\n") if line) + "\n")
    spm_train.train([corpus], work / "spm", LOSSLESS_FLAGS)
    return work / "spm.model"


@pytest.fixture(scope="session")
def token_arrays(small_model, tmp_path_factory):
    """The sample's test shard as training data and its val shard for validation, tokenized once."""
    out = tmp_path_factory.mktemp("tokens")
    for name, target in (("test", "00"), ("val", "val")):
        pretokenize.run(
            [SAMPLE / f"{name}.jsonl.zst"], small_model, out / f"{target}.bin", PretokenizeParams(workers=2)
        )
    return out


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
