"""Prometheus's own PromQL test suite (promqltest scripts of v2.53.5) against planoscope's engine.

Every ``eval`` of every script in testdata/ is a test. A case listed in skips.txt must still fail
(so the list cannot go stale); every other case must pass.
"""

from __future__ import annotations

import pytest
from promqltest import all_cases, outcome, read_skips

CASES = all_cases()
SKIPS = read_skips()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case):
    error = outcome(case)
    reason = SKIPS.get(case.id)
    if reason is None:
        assert error is None, f"{case.id}: {case.expr}\n{error}"
    else:
        assert error is not None, f"{case.id} passes now: remove it from skips.txt (listed as: {reason})"


def test_skips_name_existing_cases():
    ids = {c.id for c in CASES}
    assert set(SKIPS) <= ids, sorted(set(SKIPS) - ids)


def test_the_suite_is_all_there():
    # The files the engine must pass, each with the number of evals Prometheus v2.53.5 has in it.
    per_file = {}
    for c in CASES:
        per_file[c.file] = per_file.get(c.file, 0) + 1
    assert per_file == {
        "aggregators.test": 83,
        "functions.test": 220,
        "staleness.test": 14,
    }
