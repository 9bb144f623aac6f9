"""Secret scan of added lines: planted credentials are found at the right file:line and never echoed.

The planted values are generated at run time (never literal in this file), so the repository itself
never holds anything a push-protection scanner would take for a real credential.
"""

from __future__ import annotations

import logging
import random
import string
import subprocess
from pathlib import Path

import pytest
from tests.conftest import git

from conveyor.checks.secrets import (
    UNKNOWN_FILE,
    AddedLine,
    SecretFinding,
    added_lines,
    render_findings,
    scan_unified_diff,
)

_RNG = random.Random(20240611)
_ALNUM = string.ascii_letters + string.digits


def _random(alphabet: str, length: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(length))


AWS_KEY_ID = "AKIA" + _random(string.ascii_uppercase + string.digits, 16)
AWS_SECRET = _random(_ALNUM + "/+", 40)
GITHUB_CLASSIC = "ghp" + "_" + _random(_ALNUM, 36)
GITHUB_FINE_GRAINED = "github" + "_pat_" + _random(_ALNUM, 22) + "_" + _random(_ALNUM, 59)
KEY_BODY = [_random(_ALNUM + "+/", 64) for _ in range(3)]
PLANTED = [AWS_KEY_ID, AWS_SECRET, GITHUB_CLASSIC, GITHUB_FINE_GRAINED, *KEY_BODY]


def _pem(kind: str) -> str:
    return "\n".join([f"-----BEGIN {kind} PRIVATE KEY-----", *KEY_BODY, f"-----END {kind} PRIVATE KEY-----"])


def staged_diff(repo: Path, *extra: str) -> str:
    """What the gate scans: the staged change, without context lines."""
    git(repo, "add", "-A")
    done = subprocess.run(["git", "diff", "--cached", "-U0", "-M", *extra], cwd=repo,
                          capture_output=True, check=True)
    return done.stdout.decode("utf-8", "surrogateescape")  # bytes: no newline translation of "\r\n"


def write(repo: Path, name: str, text: str) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- planted secrets --------------------------------------------------------------------------------


def test_planted_secrets_are_found_at_their_file_and_line(git_repo: Path) -> None:
    write(git_repo, "app/settings.py", "\n".join([
        "import os",
        "",
        f'AWS_ACCESS_KEY_ID = "{AWS_KEY_ID}"',
        f'aws_secret_access_key = "{AWS_SECRET}"',
        "DEBUG = False",
        f'GITHUB_TOKEN = "{GITHUB_CLASSIC}"',
        "",
    ]))
    write(git_repo, "deploy/.env", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\nGH_TOKEN={GITHUB_FINE_GRAINED}\n")
    write(git_repo, "deploy/id_rsa", _pem("RSA") + "\n")
    write(git_repo, "deploy/id_ed25519", "# key\n" + _pem("OPENSSH") + "\n")

    findings = scan_unified_diff(staged_diff(git_repo))

    assert {(f.file, f.line) for f in findings} == {
        ("app/settings.py", 3), ("app/settings.py", 4), ("app/settings.py", 6),
        ("deploy/.env", 1), ("deploy/.env", 2),
        ("deploy/id_rsa", 1), ("deploy/id_ed25519", 2),
    }
    kinds = {(f.file, f.line): f.kind for f in findings}
    assert kinds[("app/settings.py", 3)] == "AWS Access Key"
    assert kinds[("app/settings.py", 6)] == "GitHub Token"
    assert kinds[("deploy/.env", 2)] == "GitHub Token"
    assert kinds[("deploy/id_rsa", 1)] == "Private Key"
    assert kinds[("deploy/id_ed25519", 2)] == "Private Key"


def test_secrets_in_a_modified_file_get_the_new_line_numbers(git_repo: Path) -> None:
    write(git_repo, "config.py", "\n".join(f"line_{n} = {n}" for n in range(1, 21)) + "\n")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "config")
    lines = [f"line_{n} = {n}" for n in range(1, 21)]
    del lines[2:5]  # removals before the secret shift its line number
    lines.insert(10, f'token = "{GITHUB_CLASSIC}"')
    write(git_repo, "config.py", "\n".join(lines) + "\n")

    assert scan_unified_diff(staged_diff(git_repo)) == [SecretFinding("config.py", 11, "GitHub Token")]


def test_a_removed_secret_does_not_block(git_repo: Path) -> None:
    write(git_repo, "leak.py", f'token = "{GITHUB_CLASSIC}"\nother = 1\n')
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "leak")
    write(git_repo, "leak.py", 'token = os.environ["TOKEN"]\nother = 1\n')

    assert scan_unified_diff(staged_diff(git_repo)) == []


def test_a_pragma_comment_does_not_hide_a_secret() -> None:
    """detect-secrets honours `pragma: allowlist secret`; an agent must not be able to use it."""
    diff = f'+++ b/x.py\n@@ -0,0 +1 @@\n+KEY = "{AWS_KEY_ID}"  # pragma: allowlist secret\n'
    assert scan_unified_diff(diff) == [SecretFinding("x.py", 1, "AWS Access Key")]


def test_credentials_in_a_url_are_found_but_placeholders_are_not() -> None:
    password = _random(_ALNUM, 14)
    diff = "\n".join([
        "+++ b/settings.py", "@@ -0,0 +1,4 @@",
        f'+MIRROR = "https://deploy:{password}@packages.example.com/simple"',
        '+LOCAL = "postgres://postgres:postgres@localhost:5432/app"',
        '+DOCS = "https://user:<password>@host/path"',
        '+ENV = "https://user:${PASSWORD}@host/path"',
    ])
    assert scan_unified_diff(diff) == [SecretFinding("settings.py", 1, "Basic Auth Credentials")]


# -- nothing is echoed ------------------------------------------------------------------------------


def test_no_output_ever_contains_a_planted_value(
    git_repo: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    write(git_repo, "a.py", f'K = "{AWS_KEY_ID}"\nS = "aws_secret_key={AWS_SECRET}"\nT = "{GITHUB_CLASSIC}"\n')
    write(git_repo, "b.txt", f"{GITHUB_FINE_GRAINED}\n" + _pem("RSA") + "\n")

    findings = scan_unified_diff(staged_diff(git_repo))
    rendered = render_findings(findings)
    added = list(added_lines(staged_diff(git_repo)))
    captured = capsys.readouterr()

    assert len(findings) >= 5
    everything = "\n".join([
        rendered, repr(findings), str(findings), *(str(vars(f)) for f in findings),
        repr(added), captured.out, captured.err, caplog.text,
    ])
    for value in PLANTED:
        assert value not in everything
    assert "a.py:1" in rendered and "b.txt:2" in rendered


def test_render_findings_names_file_line_and_kind() -> None:
    text = render_findings([SecretFinding("app/x.py", 12, "AWS Access Key"),
                            SecretFinding("id_rsa", 1, "Private Key")])
    assert "2 possible secrets" in text
    assert "  app/x.py:12: AWS Access Key" in text
    assert "  id_rsa:1: Private Key" in text
    assert "rotate" in text
    assert render_findings([]) == ""
    assert "a possible secret " in render_findings([SecretFinding("a", 1, "GitHub Token")])


# -- clean code stays clean -------------------------------------------------------------------------


CLEAN_MODULE = '''\
"""Cache of build artefacts keyed by content hash."""
import hashlib
import os
import uuid

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
RELEASE_COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"
NAMESPACE = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
REQUEST_ID = "3f2b9c1e-8d4a-4f6b-9e2a-7c5d1b0a9e8f"
ICON = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
INTEGRITY = "sha512-Qb6bN4+u2Ct0Yp8xV3OQ9e1lYl8yMq1zEwJz5hQpT0Vb2Cw3mY7dZ4n9rK6sA1fG8hJ2kL5pX0cV7bN3mQ4wE=="
password = os.environ["DATABASE_PASSWORD"]
api_key = settings.get("api_key")
secret_key: str = config.secret_key
DSN = f"postgresql://{user}:{password}@{host}:5432/{name}"
EXAMPLE_URL = "https://user:password@example.com/"
AWS_REGION = "eu-west-1"
TASK_ID = "TASK-12345"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()  # e.g. 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae


def token_for(user_id: int) -> str:
    token = os.environ.get("GITHUB_TOKEN", "")
    return f"{user_id}:{token}"
'''


def test_a_realistic_clean_python_change_has_no_findings(git_repo: Path) -> None:
    write(git_repo, "src/cache.py", CLEAN_MODULE)
    write(git_repo, "package-lock.json", '{"integrity": "sha512-' + "A" * 20 + _random(_ALNUM, 60) + '=="}\n')
    write(git_repo, "README.md", "# scratch\n\nRun `make test`. Hash: 0123456789abcdef0123456789abcdef\n")

    assert scan_unified_diff(staged_diff(git_repo)) == []


def test_an_empty_diff_has_no_findings() -> None:
    assert scan_unified_diff("") == []


# -- diff parsing -----------------------------------------------------------------------------------


def test_parsing_new_deleted_renamed_binary_and_no_newline_files(git_repo: Path) -> None:
    write(git_repo, "old.py", "".join(f"value_{n} = {n}\n" for n in range(30)))
    write(git_repo, "gone.py", "bye = 1\n")
    write(git_repo, "plain.txt", "x")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "base")
    (git_repo / "old.py").rename(git_repo / "renamed.py")
    with (git_repo / "renamed.py").open("a") as handle:
        handle.write("added_after_rename = 1\n")
    (git_repo / "gone.py").unlink()
    write(git_repo, "plain.txt", "x\ny")  # no newline at the end, before and after
    (git_repo / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))
    write(git_repo, "new.py", "first\nsecond\n")

    found = [(a.file, a.line, a.text) for a in added_lines(staged_diff(git_repo))]

    assert found == [
        ("new.py", 1, "first"), ("new.py", 2, "second"),
        ("plain.txt", 1, "x"), ("plain.txt", 2, "y"),
        ("renamed.py", 31, "added_after_rename = 1"),
    ]


def test_parsing_unusual_names_and_contents(git_repo: Path) -> None:
    write(git_repo, "my notes.md", "spaces\n")
    write(git_repo, "café/ünï.py", "unicode\n")
    (git_repo / "crlf.txt").write_bytes("one\r\ntwo\x0cpage\u2028same".encode())
    write(git_repo, "tricky.txt", "++ b/not-a-header\n@@ -1 +1 @@\n-- a/not-removed\n")

    found = [(a.file, a.line, a.text) for a in added_lines(staged_diff(git_repo))]

    assert ("my notes.md", 1, "spaces") in found
    assert ("café/ünï.py", 1, "unicode") in found
    assert ("crlf.txt", 1, "one\r") in found
    assert ("crlf.txt", 2, "two\x0cpage\u2028same") in found
    assert [(line, text) for file, line, text in found if file == "tricky.txt"] == [
        (1, "++ b/not-a-header"), (2, "@@ -1 +1 @@"), (3, "-- a/not-removed"),
    ]


def test_parsing_context_lines_and_several_hunks(git_repo: Path) -> None:
    write(git_repo, "f.txt", "".join(f"{n}\n" for n in range(1, 41)))
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "base")
    lines = [f"{n}" for n in range(1, 41)]
    lines[4] = "five"          # line 5 changed
    lines.insert(30, "new")    # becomes line 31
    write(git_repo, "f.txt", "\n".join(lines) + "\n")

    diff = staged_diff(git_repo, "-U3")  # context lines must be counted, not reported

    assert [(a.line, a.text) for a in added_lines(diff)] == [(5, "five"), (31, "new")]


def test_parsing_quoted_paths_mnemonic_prefixes_and_headerless_hunks() -> None:
    diff = "\n".join([
        'diff --git "a/tab\\there" "b/tab\\there"',
        '+++ "b/tab\\there"',
        "@@ -0,0 +1 @@",
        "+quoted",
        "diff --git i/x.py w/x.py",
        "+++ w/x.py",
        "@@ -3 +3 @@",
        "-old",
        "\\ No newline at end of file",
        "+new",
        "\\ No newline at end of file",
        "diff --git a/lost b/lost",
        "@@ -0,0 +7 @@",
        "+orphan",
    ])

    assert [(a.file, a.line, a.text) for a in added_lines(diff)] == [
        ("tab\there", 1, "quoted"), ("x.py", 3, "new"), (UNKNOWN_FILE, 7, "orphan"),
    ]


def test_a_deleted_file_adds_nothing() -> None:
    diff = "--- a/x.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n"
    assert list(added_lines(diff)) == []


def test_added_line_repr_hides_the_text() -> None:
    assert GITHUB_CLASSIC not in repr(AddedLine("x.py", 1, GITHUB_CLASSIC))
