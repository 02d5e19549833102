"""Escaping text for markdown tables (shared by the policy and the critic leaderboards).

Input: text someone else chose (a submission name, a critic id, a model name). Output: the
same text as literal characters in a CommonMark / GitHub-flavoured markdown table cell. Imports
nothing, so the critic leaderboard renders without the training stack.
"""

from __future__ import annotations

_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_KEPT = frozenset("-+")
"""ASCII punctuation left as is: neither starts an inline construct inside a table cell."""


def md_escape(text: str) -> str:
    """``text`` as literal characters in a markdown table cell (CommonMark / GitHub flavour).

    ``&``, ``<`` and ``>`` become entities (no HTML); every other ASCII punctuation character but
    ``-`` and ``+`` is backslash-escaped — links, images, emphasis, code, ``|`` and GitHub's
    ``www.`` / ``https:`` autolinks all need one — except ``_`` inside a word, which cannot
    delimit emphasis (``credit_shapley`` stays readable). Control characters become spaces.
    """
    out = []
    for i, ch in enumerate(text):
        punctuation = ch.isascii() and not ch.isalnum() and not ch.isspace() and ch not in _MD_KEPT
        intraword = ch == "_" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        if ch in _MD_ENTITIES:
            out.append(_MD_ENTITIES[ch])
        elif not ch.isprintable():
            out.append(" ")
        elif punctuation and not intraword:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)
