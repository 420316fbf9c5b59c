"""Benchmark results are as fresh as the code they measure.

Every result under ``benchmarks/results/`` records the sha256 of each source file it measures
(``benchmarks/_harness.py: provenance``). A file changed since then makes this test fail, naming the result,
the file and the script to re-run, so a stale figure is seen before it is committed, not an issue later.
"""

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))

#: Results measured before provenance was recorded. Re-running their benchmark records it; then the name
#: must leave this set (the second test insists), so the set only shrinks.
UNRECORDED: set[str] = set()


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_a_result_was_measured_on_the_code_as_it_is(path):
    record = json.loads(path.read_text())
    prov = record.get("provenance")
    if prov is None:
        assert path.name in UNRECORDED, (
            f"{path.name} records no provenance: write it with _harness.provenance"
        )
        pytest.skip(f"{path.name} predates provenance records (re-run its benchmark to record it)")
    assert prov["measured"], f"{path.name}: provenance lists no measured files"
    script = next((f for f in prov["measured"] if f.startswith("benchmarks/")), "its benchmark")
    for rel, digest in prov["measured"].items():
        source = ROOT / rel
        assert source.exists(), f"{path.name} measured {rel}, which no longer exists: re-run {script}"
        now = hashlib.sha256(source.read_bytes()).hexdigest()
        assert now == digest, (
            f"{path.name} is stale: {rel} changed since it was measured (commit {prov.get('commit')}); "
            f"re-run {script} and commit its new result"
        )


def test_unrecorded_results_only_shrink():
    recorded = {p.name for p in RESULTS if "provenance" in json.loads(p.read_text())}
    assert not (recorded & UNRECORDED), (
        f"remove from UNRECORDED, they now record provenance: {recorded & UNRECORDED}"
    )
