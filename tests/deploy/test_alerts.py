"""deploy/cbl-alerts.yml: valid for the real promtool, unit-tested with example series
(tests/deploy/alerts_test.yml), a runbook line on every alert, and every series it uses is
one the recorder really exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from logger.metrics import ConnStats, Metrics
from logger.protocol import FeedCounters
from logger.sink import SinkStats
from logger.supervisor import WorkersCollector

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "cbl-alerts.yml"
UNIT_TESTS = REPO / "tests" / "deploy" / "alerts_test.yml"


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=REPO)


def _alerts(text: str) -> list[str]:
    """Each alert's block of the rules file (from its `- alert:` line to the next)."""
    return re.split(r"\n(?=      - alert: )", text)[1:]


def test_promtool_checks_the_rules(promtool: str) -> None:
    done = _promtool(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    n = len(_alerts(RULES.read_text()))
    assert f"SUCCESS: {n} rules found" in done.stdout


def test_promtool_unit_tests_fire_and_stay_quiet(promtool: str) -> None:
    done = _promtool(promtool, "test", "rules", str(UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_wrong_expectation_or_rule_is_caught(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "rules.yml"
    broken.write_text(RULES.read_text().replace("increase(cbl_gaps_total[15m]) > 0",
                                                "increase(cbl_gaps_total[15m] > 0"))
    assert _promtool(promtool, "check", "rules", str(broken)).returncode != 0
    quiet = tmp_path / "quiet.yml"  # the gap alert made unable to fire: its unit test fails
    quiet.write_text(RULES.read_text().replace("increase(cbl_gaps_total[15m]) > 0",
                                               "increase(cbl_gaps_total[15m]) > 1000"))
    tests = tmp_path / "t.yml"
    tests.write_text(UNIT_TESTS.read_text().replace("../../deploy/cbl-alerts.yml", str(quiet)))
    done = _promtool(promtool, "test", "rules", str(tests))
    assert done.returncode != 0 and "CblSequenceGaps" in done.stdout + done.stderr


def test_every_alert_has_severity_summary_runbook_and_a_test() -> None:
    tests = UNIT_TESTS.read_text()
    names = []
    for block in _alerts(RULES.read_text()):
        name = re.match(r"      - alert: (\w+)", block)
        assert name, block
        names.append(name.group(1))
        assert re.search(r"severity: (warning|critical)\n", block), name.group(1)
        assert re.search(r"\n          summary: \".+\"", block), name.group(1)
        assert re.search(r"\n          runbook: \".{20,}\"", block), name.group(1)
        fires = re.search(r"alertname: " + name.group(1) + r"\n        exp_alerts:\n"
                          r"          - exp_labels", tests)
        assert fires, f"{name.group(1)} has no firing case in {UNIT_TESTS.name}"
    needed = {"CblConnectionSilent", "CblSequenceGaps", "CblRecordsDropped",
              "CblUncleanRestart", "CblDiskSpaceLow", "CblCommitSlow", "CblArchiveBacklog"}
    assert needed <= set(names)
    deploy = (REPO / "docs" / "DEPLOY.md").read_text()
    for name in names:
        assert f"`{name}`" in deploy, f"{name} missing from docs/DEPLOY.md"


def _exported(tmp_path: Path) -> set[str]:
    """Sample names of a real scrape: the single process's registry (with the data root's
    series) and the supervisor's workers collector."""
    stats = ConnStats("0", FeedCounters())
    stats.channel("ticker").messages = 1
    m = Metrics(lambda: [stats], SinkStats(), lambda: 0, lambda: 0)
    m.add_root(tmp_path, 0)
    m.observe_commit(0.01, 10)
    sup = CollectorRegistry()
    sup.register(WorkersCollector(lambda: [(0, None, False)], 1))
    text = generate_latest(m.registry).decode() + generate_latest(sup).decode()
    families = list(text_string_to_metric_families(text))
    # sample names (cbl_gaps_total, cbl_commit_seconds_bucket) and family names (a runbook
    # may name the histogram cbl_commit_seconds)
    return {s.name for fam in families for s in fam.samples} | {fam.name for fam in families}


def test_every_series_the_rules_use_is_exported(tmp_path: Path) -> None:
    exported = _exported(tmp_path)
    used = set(re.findall(r"\b(cbl_\w+)", RULES.read_text()))
    assert used, "no recorder series in the rules?"
    missing = {name for name in used if name not in exported}
    assert not missing, f"rules use series the recorder does not export: {missing}"
    for name in ("cbl_data_disk_free_bytes", "cbl_unclean_stops_total",
                 "cbl_archive_backlog_seconds", "cbl_archive_backlog_segments"):
        assert name in exported
