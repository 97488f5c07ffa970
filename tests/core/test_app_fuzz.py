# The order core, settings, schemas and topic parsers under seeded random event sequences
# (tests/core/fuzz.py), on both interpreters. make test runs FUZZ_CASES (default 2000) cases
# from FUZZ_SEED (default 1); a failure names the case's seed: FUZZ_SEED=<it> FUZZ_CASES=1
# replays it. make fuzz runs many more from a new seed.
import os

from tests.core import fuzz


def _env(name, default):
    v = os.getenv(name)
    return int(v) if v else default


def test_random_event_sequences_keep_the_contract():
    cases, seed = _env("FUZZ_CASES", 2000), _env("FUZZ_SEED", 1)
    events = fuzz.main(cases, seed, quiet=True)
    assert events >= cases, (events, cases)
