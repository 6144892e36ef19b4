"""A failure pytest cannot format is still reported, and the run goes on.

pytest shows a failure by parsing the source of every frame in its traceback. On
CPython 3.11 that parse can itself raise (``SystemError: AST constructor recursion
depth mismatch``, python/cpython#106905, seen when a broken object's ``__del__`` ran
during it), and an exception out of report-making is an INTERNALERROR that ends the
whole session. Here such a failure becomes an ordinary one, with a plain traceback.
"""

from __future__ import annotations

import traceback

import pytest
from _pytest.reports import TestReport


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    try:
        return (yield)
    except Exception as e:
        if call.excinfo is None:
            raise
        plain = "".join(traceback.format_exception(call.excinfo.value))
        longrepr = f"{plain}\n(pytest could not format this failure itself: {type(e).__name__}: {e})"
        return TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed", longrepr, call.when, (),
                          call.duration, call.start, call.stop, user_properties=item.user_properties)
