"""`make mutants` stays runnable: each deliberate break of tests/mutants.py still finds its text, once,
and names tests that exist (it runs outside CI, so a refactor would otherwise leave it stale)."""

import ast

import pytest

from tests.helpers import REPO
from tests.mutants import MUTANTS


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda mutant: mutant.promise.split(":")[0])
def test_every_break_finds_its_text_once_and_names_existing_tests(mutant):
    text = (REPO / mutant.path).read_text()
    for old, _ in mutant.edits:
        assert text.count(old) == 1, f"{mutant.path}: {old!r} appears {text.count(old)} times"
    for test in mutant.tests:
        path, _, name = test.partition("::")
        tree = ast.parse((REPO / path).read_text())
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert not name or name.split("[")[0] in defined, f"{test}: no such test"
