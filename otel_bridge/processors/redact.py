"""Redaction of secrets (on by default) and PII (opt-in) in message text before anything leaves otel-bridge.

Prompts routinely carry pasted credentials; traces are stored for 90 days and shipped to two vendors, so API keys
and bearer tokens are masked in every text otel-bridge exports (DESIGN decision 10).
"""

from __future__ import annotations

import re

_SECRETS = [
    re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}"),  # OpenAI / Anthropic keys
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API keys
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"),  # Authorization: Bearer …
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
    re.compile(r"(?i)\b(api[_-]?key|secret|password|passwd|token)(\s*[=:]\s*)([^\s\"',;]{8,})"),
]
_PII = [
    re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),  # e-mail addresses
    re.compile(
        r"(?<!\d)(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]\d{3,4}(?:[ .-]\d{2,4})?(?!\d)"
    ),  # phones
    re.compile(r"\b(?:\d[ -]?){13,16}\b"),  # card numbers
]
MASK = "[REDACTED]"


class Redactor:
    """``redactor(text)`` masks what matches; cheap when nothing does (a quick pre-check per pattern)."""

    def __init__(self, *, secrets: bool = True, pii: bool = False) -> None:
        self.patterns = (_SECRETS if secrets else []) + (_PII if pii else [])
        # One scan decides whether any pattern can match; most texts hold no secret and stop here.
        # Case-insensitive: a superset of what the patterns match, which is all a pre-check needs.
        alternatives = "|".join(f"(?:{p.pattern.removeprefix('(?i)')})" for p in self.patterns)
        self._any = re.compile(alternatives, re.IGNORECASE) if self.patterns else None
        self.redacted = 0

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __call__(self, text: str | None) -> str | None:
        if not text or self._any is None or self._any.search(text) is None:
            return text
        for pattern in self.patterns:
            text, n = pattern.subn(_mask, text)
            self.redacted += n
        return text


def _mask(m: re.Match[str]) -> str:
    # keep the key name of "api_key=…" so a reader still sees what was there
    return f"{m.group(1)}{m.group(2)}{MASK}" if m.re.groups == 3 else MASK
