"""Redaction of secrets (on by default) and PII (opt-in) in message text before anything leaves otel-bridge.

Prompts routinely carry pasted credentials; traces are stored for 90 days and shipped to two vendors, so API keys
and bearer tokens are masked in every text otel-bridge exports (DESIGN decision 10).
"""

from __future__ import annotations

import re

# Each pattern with the lowercase literals one of which any match must contain (None: no literal, always tried).
_SECRETS: list[tuple[re.Pattern[str], tuple[str, ...] | None]] = [
    (re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}"), ("sk-",)),  # OpenAI / Anthropic keys
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), ("akia",)),  # AWS access key id
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),  # GitHub tokens
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), ("xox",)),  # Slack tokens
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), ("aiza",)),  # Google API keys
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"), ("bearer",)),  # Authorization: Bearer …
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), ("eyj",)),  # JWTs
    (
        re.compile(r"(?i)\b(api[_-]?key|secret|password|passwd|token)(\s*[=:]\s*)([^\s\"',;]{8,})"),
        ("api_key", "api-key", "apikey", "secret", "password", "passwd", "token"),
    ),
]
_PII: list[tuple[re.Pattern[str], tuple[str, ...] | None]] = [
    (re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), ("@",)),  # e-mail addresses
    (
        re.compile(r"(?<!\d)(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]\d{3,4}(?:[ .-]\d{2,4})?(?!\d)"),
        None,
    ),  # phones
    (re.compile(r"\b(?:\d[ -]?){13,16}\b"), None),  # card numbers
]
MASK = "[REDACTED]"


class Redactor:
    """``redactor(text)`` masks what matches; cheap when nothing does: a pattern runs only on a text that holds
    one of its literals (substring tests on the lowercased text, in C), which most texts do not."""

    def __init__(self, *, secrets: bool = True, pii: bool = False) -> None:
        self._rules = (_SECRETS if secrets else []) + (_PII if pii else [])
        # One C-level scan for any literal at all: most texts (names, ids, short prompts) hold none and stop here.
        literals = [lit for _, lits in self._rules for lit in lits or ()]
        always = any(lits is None for _, lits in self._rules)
        self._any = None if always or not literals else re.compile("|".join(map(re.escape, literals)))
        self.redacted = 0

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __call__(self, text: str | None) -> str | None:
        if not text or not self._rules:
            return text
        lowered = text.lower()
        if self._any is not None and self._any.search(lowered) is None:
            return text
        for pattern, literals in self._rules:
            if literals is None or any(lit in lowered for lit in literals):
                text, n = pattern.subn(_mask, text)
                self.redacted += n
        return text


def _mask(m: re.Match[str]) -> str:
    # keep the key name of "api_key=…" so a reader still sees what was there
    return f"{m.group(1)}{m.group(2)}{MASK}" if m.re.groups == 3 else MASK
