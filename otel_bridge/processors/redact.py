"""Redaction of secrets (on by default) and PII (opt-in) in message text before anything leaves otel-bridge.

Prompts routinely carry pasted credentials; traces are stored for 90 days and shipped to two vendors, so API keys
and bearer tokens are masked in every text otel-bridge exports (DESIGN decision 10).
"""

from __future__ import annotations

import re
import sys
from typing import NamedTuple


class _Rule(NamedTuple):
    pattern: re.Pattern[str]
    literals: tuple[str, ...] | None  # lowercase; any match holds one of them (None: no literal, always tried)
    starts: bool = False  # every match starts with one of the literals: tried only where one occurs


_SECRETS: list[_Rule] = [
    _Rule(re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}"), ("sk-",), True),  # OpenAI / Anthropic keys
    _Rule(re.compile(r"\bAKIA[0-9A-Z]{16}\b"), ("akia",), True),  # AWS access key id
    _Rule(re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), True),  # GitHub
    _Rule(re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), ("xox",), True),  # Slack tokens
    _Rule(re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), ("aiza",), True),  # Google API keys
    _Rule(re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"), ("bearer",), True),  # Authorization: Bearer …
    _Rule(re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), ("eyj",), True),  # JWTs
    _Rule(
        re.compile(r"(?i)\b(api[_-]?key|secret|password|passwd|token)(\s*[=:]\s*)([^\s\"',;]{8,})"),
        ("api_key", "api-key", "apikey", "secret", "password", "passwd", "token"),
        True,
    ),
]
_PII: list[_Rule] = [
    _Rule(re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), ("@",)),  # e-mail addresses
    _Rule(
        re.compile(r"(?<!\d)(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]\d{3,4}(?:[ .-]\d{2,4})?(?!\d)"),
        None,
    ),  # phones
    _Rule(re.compile(r"\b(?:\d[ -]?){13,16}\b"), None),  # card numbers
]
MASK = "[REDACTED]"
# Texts recur: a system prompt in every call of an agent, a conversation's history in each of its calls, the same
# message read for every destination. Their redaction is remembered, up to this many characters of text.
MEMO_CHARS = 2_000_000


class Redactor:
    """``redactor(text)`` masks what matches; cheap when nothing does. A text shorter than the shortest possible
    match is returned as it is; otherwise a pattern runs only on a text holding one of its literals (substring
    tests on the lowercased text, in C: about 1 ns a character each, where one regex alternation of the literals
    took 30), and a pattern whose matches start with a literal is tried only where the literal occurs (a
    ``\\b``-led pattern scanning a whole text costs 20–30 ns a character, and "token" is in most request bodies)."""

    def __init__(self, *, secrets: bool = True, pii: bool = False) -> None:
        self._rules = (_SECRETS if secrets else []) + (_PII if pii else [])
        # no text shorter than the shortest possible match is scanned (nor remembered); without rules, none is
        self._shortest = min((_min_width(r.pattern) for r in self._rules), default=sys.maxsize)
        self._literals = tuple((lit, i) for i, r in enumerate(self._rules) for lit in r.literals or ())
        self._always = frozenset(i for i, r in enumerate(self._rules) if r.literals is None)
        self.redacted = 0
        self._memo: dict[str, tuple[str, int]] = {}  # text → (redacted text, masks in it)
        self._memo_chars = 0

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __call__(self, text: str | None) -> str | None:
        if not text or len(text) < self._shortest:
            return text
        known = self._memo.get(text)
        if known is not None:
            self.redacted += known[1]
            return known[0]
        before = self.redacted
        out = self._redact(text)
        self._remember(text, out, self.redacted - before)
        return out

    def _remember(self, text: str, out: str, masks: int) -> None:
        """Bounded by characters held (what the memo keeps alive), emptied when full: a hot prompt is back after
        one miss."""
        if len(text) > MEMO_CHARS // 16:
            return
        if self._memo_chars + len(text) > MEMO_CHARS:
            self._memo.clear()
            self._memo_chars = 0
        self._memo[text] = (out, masks)
        self._memo_chars += len(text)

    def _redact(self, text: str) -> str:
        lowered = text.lower()
        hit = {i for lit, i in self._literals if lit in lowered}
        if not hit and not self._always:
            return text
        for i, rule in enumerate(self._rules):
            if i in hit:
                if rule.starts and len(lowered) == len(text):  # positions in ``lowered`` are positions in ``text``
                    text, n = _sub_at_literals(rule, text, lowered)
                else:
                    text, n = rule.pattern.subn(_mask, text)
            elif i in self._always:
                text, n = rule.pattern.subn(_mask, text)
            else:
                continue
            if n:
                self.redacted += n
                lowered = text.lower()
        return text


def _sub_at_literals(rule: _Rule, text: str, lowered: str) -> tuple[str, int]:
    """``rule.pattern.subn`` for a pattern whose matches start with one of its literals, tried only at the
    literals' occurrences (``match`` at a position still sees the character before it, so ``\\b`` holds)."""
    starts: set[int] = set()
    for lit in rule.literals or ():
        at = lowered.find(lit)
        while at >= 0:
            starts.add(at)
            at = lowered.find(lit, at + 1)
    pieces, last, n = [], 0, 0
    for at in sorted(starts):
        if at < last:
            continue
        m = rule.pattern.match(text, at)
        if m is not None and m.end() > at:
            pieces += (text[last:at], _mask(m))
            last, n = m.end(), n + 1
    if not n:
        return text, 0
    pieces.append(text[last:])
    return "".join(pieces), n


def _min_width(pattern: re.Pattern[str]) -> int:
    """The fewest characters a match of ``pattern`` can have (from the regex parser's own width bounds)."""
    return int(re._parser.parse(pattern.pattern, pattern.flags).getwidth()[0])  # type: ignore[attr-defined]


def _mask(m: re.Match[str]) -> str:
    # keep the key name of "api_key=…" so a reader still sees what was there
    return f"{m.group(1)}{m.group(2)}{MASK}" if m.re.groups == 3 else MASK
