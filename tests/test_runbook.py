"""docs/runbook.md answers every alert in deploy/prometheus-alerts.yml and the failures operators meet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parent.parent
RUNBOOK = (BASE_DIR / "docs" / "runbook.md").read_text()
ALERTS_FILE = yaml.safe_load((BASE_DIR / "deploy" / "prometheus-alerts.yml").read_text())
ALERTS = [rule["alert"] for group in ALERTS_FILE["groups"] for rule in group["rules"]]
FAILURES = ["Redis down", "PostgreSQL down", "Provider down", "Budget exhausted", "Dead letters piling up", "Memory queue backlog"]
CHAPTERS = ["Alerts", "Common failures", "Releases and rollback", "Backup and restore", "Disaster recovery", "Tuning", "Data lifecycle"]


def section(heading: str) -> str:
    """The text under `### heading` up to the next heading of any level."""
    match = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#)", RUNBOOK + "\n#", flags=re.MULTILINE | re.DOTALL)
    assert match, f"docs/runbook.md has no '### {heading}' section"
    return match.group(1)


def test_the_alerts_file_has_alerts():
    assert len(ALERTS) >= 8 and len(set(ALERTS)) == len(ALERTS)


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_says_what_it_means_and_what_to_do(alert):
    text = section(alert)
    assert "**Meaning.**" in text, f"the runbook's {alert} says what it means"
    assert "**Action.**" in text, f"the runbook's {alert} says what to do"


def test_no_runbook_entry_names_an_alert_that_no_longer_exists():
    in_runbook = set(re.findall(r"^### (Sentinel\w+)$", RUNBOOK, flags=re.MULTILINE))
    assert in_runbook == set(ALERTS)


@pytest.mark.parametrize("failure", FAILURES)
def test_every_common_failure_has_its_section(failure):
    assert len(section(failure).strip()) > 40


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_runbook_has_its_chapters(chapter):
    assert re.search(rf"^## {re.escape(chapter)}$", RUNBOOK, flags=re.MULTILINE), f"docs/runbook.md has '## {chapter}'"
