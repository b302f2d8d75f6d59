"""deploy/ works as written: the units and the timer agree on every path and user, with each
other, with docs/DEPLOY.md and with docs/TOOLS.md, and systemd itself accepts them."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from logger.config import SCHEMA

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CODE = "/opt/coinbase-logger"
DATA = "/var/lib/coinbase-logger"
CONFIG = "/etc/coinbase-logger/config.toml"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """A systemd unit file: section → key → values (keys may repeat; `\\` continues)."""
    out: Unit = {}
    section = ""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"{path.name}: not a unit line: {line!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, (section, key, values)
    return values[0]


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {p.name: parse_unit(p) for p in sorted(DEPLOY.glob("*.service"))
            + sorted(DEPLOY.glob("*.timer"))}


def test_units_agree_on_user_code_and_data_root(units: dict[str, Unit]) -> None:
    rec, comp = units["coinbase-logger.service"], units["cbl-compact.service"]
    for unit in (rec, comp):
        svc = unit["Service"]
        assert one(unit, "Service", "User") == one(unit, "Service", "Group") == "cbl"
        assert one(unit, "Service", "WorkingDirectory") == CODE
        assert one(unit, "Service", "StateDirectory") == "coinbase-logger"  # = DATA
        assert svc["ReadWritePaths"] == [DATA]
        assert one(unit, "Service", "ProtectSystem") == "strict"
    run = shlex.split(one(rec, "Service", "ExecStart"))
    assert run[:4] == [f"{CODE}/.venv/bin/python", "-m", "logger", "run"]
    assert run[run.index("--config") + 1] == CONFIG
    assert run[run.index("--data-dir") + 1] == DATA
    compact = shlex.split(one(comp, "Service", "ExecStart"))
    assert compact[0] == f"{CODE}/tools/compact" and compact[-1] == DATA
    assert (REPO / "tools" / "compact").stat().st_mode & 0o111  # the path exists, executable
    assert one(rec, "Service", "RestartPreventExitStatus") == "2"
    timer = units["cbl-compact.timer"]
    assert one(timer, "Timer", "Unit") == "cbl-compact.service"
    assert "Install" not in comp  # started by its timer only
    assert one(timer, "Install", "WantedBy") == "timers.target"


def test_cron_lines_and_docs_use_the_same_command(units: dict[str, Unit]) -> None:
    exec_start = one(units["cbl-compact.service"], "Service", "ExecStart")
    timer_text = (DEPLOY / "cbl-compact.timer").read_text()
    cron = re.search(r"#\s+30 0 \* \* \*\s+cbl\s+(.+)", timer_text)
    assert cron and cron.group(1).strip() == exec_start
    tools = (REPO / "docs" / "TOOLS.md").read_text()
    assert f"30 0 * * *  cbl  {exec_start}" in tools
    assert "/var/lib/coinbase-logger/data" not in tools


def test_deploy_doc_walks_the_same_paths(units: dict[str, Unit]) -> None:
    doc = (REPO / "docs" / "DEPLOY.md").read_text()
    for needed in (CODE, DATA, CONFIG, "useradd --system", " cbl\n", "make venv",
                   "systemctl enable --now coinbase-logger.service cbl-compact.timer",
                   "journalctl -u coinbase-logger", "journalctl -u cbl-compact.service",
                   "http://127.0.0.1:9464/metrics", "job_name: coinbase-logger",
                   "deploy/cbl-alerts.yml", "git fetch", "systemctl restart coinbase-logger",
                   "promtool check rules"):
        assert needed in doc, needed
    for name in units:
        assert name in doc, name
    for path in re.findall(r"(/var/lib/[\w./-]+|/opt/[\w./-]+|/etc/coinbase-logger[\w./-]*)",
                           doc):
        assert path.startswith((DATA, CODE, "/etc/coinbase-logger")), path
        assert not path.startswith(DATA + "/data"), path
    # the metrics endpoint in the doc is the config's default, the job the rules select
    assert SCHEMA["metrics.port"][0] == 9464 and SCHEMA["metrics.host"][0] == "127.0.0.1"
    rules = (DEPLOY / "cbl-alerts.yml").read_text()
    assert 'job="coinbase-logger"' in rules
    readme = (REPO / "README.md").read_text()
    assert "docs/DEPLOY.md" in readme


def test_every_unit_path_in_comments_is_the_same(units: dict[str, Unit]) -> None:
    for path in list(DEPLOY.glob("*.service")) + list(DEPLOY.glob("*.timer")):
        for found in re.findall(r"/var/lib/[\w./-]+", path.read_text()):
            assert found == DATA, (path.name, found)


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the units, with the code path pointed at this checkout
    (verify checks that every ExecStart binary exists) and nothing else changed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian: apt-get install systemd); the "
                    "units are still parsed and cross-checked by the other tests here")
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in this checkout: run `make venv` (ExecStart points at it)")
    names = []
    for path in list(DEPLOY.glob("*.service")) + list(DEPLOY.glob("*.timer")):
        (tmp_path / path.name).write_text(path.read_text().replace(CODE, str(REPO)))
        names.append(str(tmp_path / path.name))
    done = subprocess.run([analyze, "verify", *names], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if line.strip() and "Failed to connect to bus" not in line]
    assert done.returncode == 0 and not problems, "\n".join(problems)


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    bad = tmp_path / "cbl-compact.service"
    bad.write_text((DEPLOY / "cbl-compact.service").read_text())  # /opt/... does not exist
    done = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert done.returncode != 0 and "is not executable" in done.stdout + done.stderr
