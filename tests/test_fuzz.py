"""Seeded fuzzing of every input: 260 malformed checkpoints, side files, mappings and populations.

Each mutant (see :mod:`audit.testing.mutants`) runs through the command
line's ``main()`` in this process under a watchdog; a sample also runs as a
real subprocess under a wall-clock timeout and an address-space limit, as a
user would run it.  The only acceptable outcomes: exit 0 (the mutation left
a valid input) or exit 2 with exactly one line on stderr.  No internal error
(exit 3), no traceback, no second line (a numpy warning), no hang.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections import Counter

import pytest

from audit.testing.mutants import OUTCOMES, classify, make_mutants, make_seeds, run

COUNT = 260
SEED = 20261203
PER_CASE_S = 20.0  # a bound per case, far above the ~0.05 s a case takes: only a hang reaches it
SUBPROCESS_SAMPLE = 3  # each process start costs ~1 s (more on a loaded machine)
MEMORY_LIMIT = 4 << 30  # the subprocess sample runs under this address-space limit: no case may allocate gigabytes


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    seeds = make_seeds(root / "seeds")
    return make_mutants(seeds, root / "mutants", COUNT, seed=SEED)


@pytest.fixture(scope="module")
def outcomes(mutants):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDIT_WORKERS", "1")
        return [run(m, timeout=PER_CASE_S) for m in mutants]


def test_every_mutant_is_refused_in_one_line_or_accepted(outcomes):
    bad = [o for o in outcomes if o.category not in ("accepted", "refused")]
    report = "\n".join(f"{o.category}: {o.mutant.kind} {o.mutant.label!r}: {o.stderr[:300]!r}" for o in bad[:10])
    assert not bad, f"{len(bad)} of {len(outcomes)} mutants ended badly:\n{report}"


def test_the_mutants_exercise_every_reader(outcomes):
    counts = Counter(o.category for o in outcomes)
    assert set(counts) <= set(OUTCOMES)
    assert counts["refused"] >= 0.7 * len(outcomes), counts  # most mutations break their input: the fuzzer bites
    refused_kinds = Counter(o.mutant.kind for o in outcomes if o.category == "refused")
    assert set(refused_kinds) == {"header", "bytes", "names", "shapes", "offsets", "config", "tokenizer", "index",
                                  "mapping", "population", "special"}, refused_kinds


def test_the_same_seed_makes_the_same_mutants(tmp_path, mutants):
    again = make_mutants(make_seeds(tmp_path / "seeds"), tmp_path / "mutants", 40, seed=SEED)
    assert [(m.kind, m.label) for m in again] == [(m.kind, m.label) for m in mutants[:40]]


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_a_sample_as_real_processes_under_time_and_memory_limits(mutants, outcomes):
    """One of each of the classes that used to hang or allocate: a huge number, deep nesting, a device or FIFO."""
    sample = [next(m for m in mutants if any(s in m.label for s in signs)) for signs in (
        ("10000000",), ("[[[[", '{"a":{"a":'), ("fifo", "/dev/zero"))]
    assert len(sample) == SUBPROCESS_SAMPLE
    for mutant in sample:
        done = subprocess.run([sys.executable, "-m", "audit.cli", *mutant.argv], capture_output=True, text=True,
                              timeout=60, preexec_fn=_limit_memory, env={**os.environ, "AUDIT_WORKERS": "1"})
        category = classify(done.returncode, done.stderr)
        assert category in ("accepted", "refused"), (mutant, done.returncode, done.stderr[:500])
        in_process = next(o for o in outcomes if o.mutant == mutant)
        assert (done.returncode, done.stderr) == (in_process.code, in_process.stderr), mutant
