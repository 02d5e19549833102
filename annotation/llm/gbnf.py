"""GBNF building blocks shared by the dense and the shares reply grammars (llama.cpp ``grammar``).

Input: texts and bounds. Output: GBNF literals and rules: an exact string, a task integer, the
bounded ``rationale`` / ``summary`` strings (no raw newlines, so a small model cannot run away) and
whitespace ``ws``. llama.cpp refuses repetition counts above 2000.
"""

from __future__ import annotations


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching exactly ``text``."""

    def escape(ch: str) -> str:
        if ch in '"\\':
            return "\\" + ch
        return f"\\x{ord(ch):02X}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch

    return '"' + "".join(escape(ch) for ch in text) + '"'


def task_rule(n_tasks: int | None) -> str:
    """The GBNF body of a task integer: −1 or a target index below ``n_tasks``."""
    if n_tasks is None:
        return '"-1" | "0" | [1-9] [0-9]{0,5}'
    return " | ".join(gbnf_literal(str(v)) for v in range(-1, n_tasks))


def text_rules(rationale_chars: int, summary_chars: int, newlines: bool = True) -> list[str]:
    """GBNF rules ``rationale``, ``summary`` (bounded JSON strings without raw newlines) and ``ws``
    (an optional newline and indent, or without ``newlines`` at most one space: fewer reply tokens)."""
    return [
        f'rationale ::= "\\"" char{{0,{rationale_chars}}} "\\""',
        f'summary ::= "\\"" char{{0,{summary_chars}}} "\\""',
        'char ::= [^"\\\\\\x00-\\x1F\\x7F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
        'ws ::= ("\\n" [ ]{0,12} | " ")?' if newlines else 'ws ::= " "?',
    ]
