"""Secret scan of the lines a change adds, so a credential never reaches a commit or a pull request.

Only added lines are scanned: removing a leaked key must never be blocked, and scanning whole files
would re-report secrets the user already has. Detection uses detect-secrets' specific-format detectors
(AWS, GitHub, private keys, Slack, Stripe...) called directly, not through its global settings
singleton: that keeps the scan thread-safe and guarantees no detector ever "verifies" a candidate by
sending it to a remote service. The generic detectors (entropy, keywords, public IPs) are left out on
purpose: they flag hashes, UUIDs and test fixtures, and a false positive here fails a task.

A finding carries the file, the new line number and the kind of secret, never the value.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

log = structlog.get_logger()

UNKNOWN_FILE = "(unknown file)"

# Left out deliberately: ArtifactoryDetector (matches ordinary upper-case words such as "APB1234567"),
# KeywordDetector, Base64/HexHighEntropyString (hashes, lock files, fixtures) and IPPublicDetector.
# detect-secrets plugins as "module.Class" under detect_secrets.plugins, imported on first use: the library
# costs ~6 MB, which an idle daemon that has gated nothing yet need not carry.
_LIBRARY_DETECTORS = (
    "aws.AWSKeyDetector",
    "azure_storage_key.AzureStorageKeyDetector",
    "basic_auth.BasicAuthDetector",
    "cloudant.CloudantDetector",
    "discord.DiscordBotTokenDetector",
    "github_token.GitHubTokenDetector",
    "gitlab_token.GitLabTokenDetector",
    "ibm_cloud_iam.IbmCloudIamDetector",
    "ibm_cos_hmac.IbmCosHmacDetector",
    "jwt.JwtTokenDetector",
    "mailchimp.MailchimpDetector",
    "npm.NpmDetector",
    "openai.OpenAIDetector",
    "private_key.PrivateKeyDetector",
    "pypi_token.PypiTokenDetector",
    "sendgrid.SendGridDetector",
    "slack.SlackDetector",
    "softlayer.SoftlayerDetector",
    "square_oauth.SquareOAuthDetector",
    "stripe.StripeDetector",
    "telegram_token.TelegramBotTokenDetector",
    "twilio.TwilioKeyDetector",
)

# Formats detect-secrets 1.5 misses: fine-grained GitHub tokens, and an AWS secret access key assigned
# without quotes (.env files, ~/.aws/credentials), which its quoted-only pattern does not see.
_EXTRA_PATTERNS: tuple[tuple[str, str], ...] = (
    ("GitHub Token", r"github_pat_[A-Za-z0-9_]{30,}"),
    ("AWS Access Key",  # the library's name for both halves of an AWS key pair
     r"(?i)aws_?secret_?(?:access_?)?key['\"]?\s*[:=]\s*['\"]?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
)

# Obvious stand-ins ("postgres://user:password@localhost") that are not worth failing a task over.
_PLACEHOLDERS = frozenset({
    "password", "passwd", "pass", "secret", "changeme", "example", "placeholder", "redacted",
    "postgres", "root", "admin", "user", "test", "guest", "x", "xxx", "xxxx", "***",
})

_HUNK_HEADER = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_DIFF_PREFIXES = ("b/", "w/", "i/", "c/", "o/")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_OCTAL = re.compile(r"[0-7]{3}")


@dataclass(frozen=True)
class SecretFinding:
    """Where a secret was added and what kind it looks like; deliberately without the value."""

    file: str
    line: int
    kind: str


@dataclass(frozen=True)
class AddedLine:
    """One line the diff adds, with its path and line number in the new version of the file."""

    file: str
    line: int
    text: str = field(repr=False)


class _Detector(Protocol):
    secret_type: str

    def analyze_string(self, string: str) -> Iterable[str]: ...


class _PatternDetector:
    """A detector for a format the library lacks, with the same interface as its plugins."""

    def __init__(self, kind: str, pattern: str) -> None:
        self.secret_type = kind
        self._regex = re.compile(pattern)

    def analyze_string(self, string: str) -> Iterator[str]:
        for match in self._regex.finditer(string):
            yield match.group(match.lastindex or 0)


@functools.cache
def _detectors() -> tuple[_Detector, ...]:
    """Build the detectors once per process: they are stateless, so sharing them is safe."""
    library: list[_Detector] = [_plugin(name)() for name in _LIBRARY_DETECTORS]
    return (*library, *(_PatternDetector(kind, pattern) for kind, pattern in _EXTRA_PATTERNS))


def _plugin(dotted: str) -> type[_Detector]:
    module, _, name = dotted.rpartition(".")
    found: type[_Detector] = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), name)
    return found


def scan_unified_diff(diff_text: str) -> list[SecretFinding]:
    """Return one finding per (file, line, kind) among the lines `diff_text` adds, in diff order."""
    findings: dict[SecretFinding, None] = {}
    scanned = 0
    for added in added_lines(diff_text):
        scanned += 1
        for kind in _kinds_in(added.text):
            findings[SecretFinding(added.file, added.line, kind)] = None
    log.info("secret_scan.done", added_lines=scanned, findings=len(findings))
    return list(findings)


def _kinds_in(text: str) -> list[str]:
    kinds: list[str] = []
    for detector in _detectors():
        if any(not _is_placeholder(value) for value in detector.analyze_string(text)):
            kinds.append(detector.secret_type)
    return kinds


def _is_placeholder(value: str) -> bool:
    from detect_secrets.filters.heuristic import (
        is_prefixed_with_dollar_sign,
        is_sequential_string,
        is_templated_secret,
    )

    return (
        not value
        or value.casefold() in _PLACEHOLDERS
        or is_sequential_string(value)
        or is_templated_secret(value)
        or is_prefixed_with_dollar_sign(value)
    )


def render_findings(findings: Sequence[SecretFinding]) -> str:
    """The task's error text: what was found where, and what to do, without any secret value."""
    if not findings:
        return ""
    noun = "a possible secret" if len(findings) == 1 else f"{len(findings)} possible secrets"
    lines = [f"The secret scan found {noun} in the added lines, so nothing was committed:"]
    lines += [f"  {finding.file}:{finding.line}: {finding.kind}" for finding in findings]
    lines.append("Remove the value (read it from the environment or a secret store instead), "
                 "and rotate the credential if it is real.")
    return "\n".join(lines)


def added_lines(diff_text: str) -> Iterator[AddedLine]:
    """Yield the lines a unified diff adds, with their file and line number in the new version.

    Hunks are consumed by their line counts, not by prefixes, so an added line that itself reads
    "++ b/x" or "@@" is never mistaken for a header. Splitting only on "\\n" keeps form feeds and
    other Unicode line breaks inside a line, where git put them.
    """
    lines = diff_text.split("\n")
    file = UNKNOWN_FILE
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("diff "):
            file = UNKNOWN_FILE
        elif line.startswith("+++ "):
            file = _target_path(line[4:]) or UNKNOWN_FILE
        elif header := _HUNK_HEADER.match(line):
            index = yield from _hunk_lines(lines, index, header, file)


def _hunk_lines(
    lines: list[str], index: int, header: re.Match[str], file: str
) -> Generator[AddedLine, None, int]:
    """Yield one hunk's added lines; return the index of the first line after the hunk."""
    old_left = 1 if header[1] is None else int(header[1])
    new_number = int(header[2])
    new_left = 1 if header[3] is None else int(header[3])
    while index < len(lines) and (old_left > 0 or new_left > 0):
        line = lines[index]
        tag = line[:1]
        if tag == "+":
            yield AddedLine(file, new_number, line[1:])
            new_number, new_left = new_number + 1, new_left - 1
        elif tag == "-":
            old_left -= 1
        elif tag in (" ", ""):
            new_number, new_left, old_left = new_number + 1, new_left - 1, old_left - 1
        elif tag != "\\":
            break
        index += 1
    return index


def _target_path(raw: str) -> str | None:
    """The new path from a "+++ " header, or None when the file is deleted."""
    name = raw.split("\t", 1)[0] if not raw.startswith('"') else raw.rstrip("\t")
    if name == "/dev/null":
        return None
    if name.startswith('"'):
        name = _c_unquote(name)
    return name[2:] if name.startswith(_DIFF_PREFIXES) else name


def _c_unquote(quoted: str) -> str:
    """Undo git's C-style quoting of unusual path names ("b/caf\\303\\251.py")."""
    body = quoted[1:-1] if len(quoted) > 1 and quoted.endswith('"') else quoted[1:]
    out = bytearray()
    index = 0
    while index < len(body):
        char = body[index]
        escape = body[index + 1:index + 2]
        if char != "\\" or not escape:
            out += char.encode("utf-8", "surrogateescape")
            index += 1
        elif escape in _C_ESCAPES:
            out.append(_C_ESCAPES[escape])
            index += 2
        elif _OCTAL.fullmatch(body[index + 1:index + 4]):
            out.append(int(body[index + 1:index + 4], 8) & 0xFF)
            index += 4
        else:
            out += b"\\"
            index += 1
    return out.decode("utf-8", "replace")
