"""The reviewer's verdict block: only a well-formed one counts, and nothing else is ever an approval."""

from __future__ import annotations

import json

import pytest

from conveyor.config.models import ReviewSettings, SizeLimits
from conveyor.pipeline.review import ReviewState, ReviewVerdict, blocking, parse_verdict
from conveyor.pipeline.size_gate import Size, over_limit


def _block(payload: object) -> str:
    return f"Some words first.\n\n```json\n{json.dumps(payload)}\n```\n"


FINDING = {"file": "a.py", "line": 3, "severity": "high", "message": "off by one"}


def test_an_approval_with_findings_is_read() -> None:
    verdict = parse_verdict(_block({"verdict": "approve", "summary": "fine", "findings": [FINDING]}))
    assert verdict is not None and verdict.decision == "approve" and verdict.summary == "fine"
    assert [(f.file, f.line, f.severity, f.message) for f in verdict.findings] == [("a.py", 3, "high", "off by one")]


def test_the_last_valid_block_wins_and_a_bare_object_counts() -> None:
    text = _block({"verdict": "approve"}) + _block({"verdict": "request_changes", "findings": [FINDING]})
    verdict = parse_verdict(text)
    assert verdict is not None and verdict.decision == "request_changes"
    bare = parse_verdict(json.dumps({"verdict": "approve"}))
    assert bare is not None and bare.decision == "approve"


@pytest.mark.parametrize("text", [
    None, "", "LGTM, approve!", "```json\n{\"verdict\": \"approve\"\n```",          # no block / broken JSON
    _block({"verdict": "lgtm"}), _block({"findings": []}), _block(["approve"]),       # wrong shapes
    _block({"verdict": "approve", "findings": [{**FINDING, "severity": "urgent"}]}),  # unknown severity
    _block({"verdict": "approve", "findings": [{"file": "a.py"}]}),                   # finding without message
])
def test_a_missing_or_malformed_verdict_is_never_an_approval(text: str | None) -> None:
    assert parse_verdict(text) is None


def test_a_secret_in_a_finding_is_withheld() -> None:
    key = "AKIA" + "IOSFODNN7EXAMPLE"
    verdict = parse_verdict(_block({"verdict": "request_changes",
                                    "findings": [{**FINDING, "message": f"key {key} committed"}]}))
    assert verdict is not None and key not in verdict.findings[0].message


def test_only_findings_at_or_above_the_threshold_block() -> None:
    low = {**FINDING, "severity": "low"}
    verdict = parse_verdict(_block({"verdict": "request_changes", "findings": [FINDING, low]}))
    assert verdict is not None
    assert [f.severity for f in blocking(verdict, "medium")] == ["high"]
    assert [f.severity for f in blocking(verdict, "info")] == ["high", "low"]
    assert blocking(verdict, "critical") == []


def test_state_status_labels_and_draft() -> None:
    state = ReviewState(ReviewSettings(enabled=True), routes=[])
    assert (state.status, state.labels(), state.holds_draft()) == ("unreviewed", ["unreviewed"], True)
    state.last, state.current = ReviewVerdict("request_changes", ()), True
    assert state.status == "approved"          # changes requested, but nothing at or above block_at
    verdict = parse_verdict(_block({"verdict": "request_changes", "findings": [FINDING]}))
    assert verdict is not None
    state.last = verdict
    assert (state.status, state.labels()) == ("changes_requested", ["changes-requested"])
    state.current = False                      # the author changed the tree since: that verdict is stale
    assert state.status == "unreviewed"
    advisory = ReviewState(ReviewSettings(enabled=True, required=False), routes=[])
    assert advisory.labels() == ["unreviewed"] and not advisory.holds_draft()


def test_the_size_gate_names_each_limit_exceeded() -> None:
    limits = SizeLimits(max_changed_lines=10, max_changed_files=2)
    assert over_limit(limits, Size(10, 2)) is None
    assert over_limit(limits, Size(11, 3)) == ("the change is too large: 11 changed lines (max_changed_lines: "
                                               "10) and 3 changed files (max_changed_files: 2)")
    assert over_limit(SizeLimits(), Size(10_000, 500)) is None
