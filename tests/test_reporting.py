"""The report policies of tests/reporting.py."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

INNER = '''
import ast

def boom(*a, **k):  # what CPython 3.11's parser raised while pytest read a frame's source
    raise SystemError("AST constructor recursion depth mismatch (before=129, after=148)")

def test_fails_and_cannot_be_formatted(monkeypatch):
    monkeypatch.setattr(ast, "parse", boom)  # undone at teardown, after the failure is formatted
    assert 1 + 1 == 3, "the planted failure"

def test_after_it_still_runs():
    assert True
'''


def test_a_failure_pytest_cannot_format_is_reported_and_the_run_goes_on(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the inner run imports the guard as tests.reporting
    pytester.makepyfile(test_inner=INNER)
    unguarded = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert "INTERNALERROR" in unguarded.stdout.str()  # what the guard is for: the run ends at the first test
    guarded = pytester.runpytest_subprocess("-p", "tests.reporting", "-p", "no:cacheprovider")
    guarded.assert_outcomes(failed=1, passed=1)
    out = guarded.stdout.str()
    assert "INTERNALERROR" not in out and "the planted failure" in out and "could not format this failure" in out


SKIPS = """
import pytest

def test_needs_a_missing_package():
    pytest.importorskip("no_such_package_here")

@pytest.mark.skipif(True, reason="real shapes need a GPU")
def test_gpu_only():
    pass
"""


def test_under_ci_a_skip_fails_unless_ci_cannot_have_what_it_needs(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_skips=SKIPS)
    monkeypatch.delenv("CI", raising=False)
    pytester.runpytest_subprocess("-p", "tests.reporting", "-p", "no:cacheprovider").assert_outcomes(skipped=2)
    monkeypatch.setenv("CI", "true")
    ci = pytester.runpytest_subprocess("-p", "tests.reporting", "-p", "no:cacheprovider")
    ci.assert_outcomes(failed=1, skipped=1)
    assert "skipped under CI=true" in ci.stdout.str() and "no_such_package_here" in ci.stdout.str()
