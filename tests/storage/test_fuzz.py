"""A short seeded slice of bench/fuzz.py: a few hundred damaged segments and archives (all
three backends) read by the reader, verify, recovery and the CLI under a timeout, with the
oracle (no crash, no hang, no wrong record, no silent loss, one batch/frame per flipped byte).
The long run is `python bench/fuzz.py` (figures in docs/FORMAT.md)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import fuzz


def test_seeded_fuzz_slice_meets_the_oracle() -> None:
    tally = fuzz.run(seed=11, segments=240, archives=60, timeout=20.0, cli_every=60)
    assert sum(tally.cases.values()) == 300
    assert {k.split()[1] for k in tally.cases} == set(fuzz.MUTATIONS)
    assert tally.failures() == [], fuzz.summary(tally)
    assert tally.flip_total > tally.flip_records >= tally.flip_bound  # damage happened, bounded
