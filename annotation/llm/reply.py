"""Replies of the LLM critic: parse and validate them, and constrain them (JSON schema, GBNF).

Input: the reply text and what the request asked for (agent ids, ``(episode_id, length)`` per
episode, whether tasks are wanted). Output: one ``EpisodeReply`` per episode in request order,
agents in ``agent_ids`` order, and whether the reply had to be repaired.

Reply format (DESIGN.md §5, CONTRACT), rationale before numbers, ``tasks`` only for LLM-TACA::

    {"agents": [{"agent_id": "agent_0", "rationale": "...", "credits": [0.0, 0.5],
                 "tasks": [1, 1]}], "summary": "..."}
    {"episodes": [{"episode_id": 7, "agents": [...], "summary": "..."}, ...]}   # batch

Tolerated (``repaired=True``): prose or code fences around the object, raw newlines inside
strings, numbers as numeric strings, integral floats as tasks, agents or episodes in another
order, a batch-shaped reply to a one-episode request. Anything else raises ``ReplyError`` with a
message to quote back to the model in a corrective retry (``agent_1: expected 23 credits, got 21``),
including what only the grammar used to bound: rationales and summaries longer than the limits
below, numbers that float32 (the stored dtype) would make ±inf, tasks beyond int16.

``reply_json_schema`` / ``reply_grammar`` describe exactly the requested reply for
``response_format`` (OpenAI ``json_schema``, llama-cpp-python ``json_object`` + schema, vLLM's
``structured_outputs``) or a llama.cpp GBNF ``grammar``. The grammar bounds numbers
(``-?\\d{1,3}(\\.\\d{1,3})?``) and strings (``RATIONALE_MAX_CHARS`` / ``SUMMARY_MAX_CHARS``, no raw
newlines) so a small model cannot run away; llama.cpp refuses repetition counts above 2000
(windows of more than 2001 steps). ``quote`` cuts an invalid reply to what a corrective retry may
send back (``QUOTE_MAX_CHARS``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from llmca_data.errors import LlmcaError

from .gbnf import gbnf_literal, task_rule, text_rules

RATIONALE_MAX_CHARS = 200
"""Longest rationale the grammar allows and the parser accepts (characters)."""
SUMMARY_MAX_CHARS = 300
"""Longest summary the grammar allows and the parser accepts (characters)."""
TASK_MAX = 2**15 - 1
"""Largest task index (tasks are stored as int16)."""
_FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)```", re.DOTALL)
_V = TypeVar("_V")
_MAX_STARTS = 20  # how many "{" positions to try when prose surrounds the JSON object


class ReplyError(LlmcaError, ValueError):
    """A reply that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class AgentReply:
    """One agent's part of a reply."""

    agent_id: str
    rationale: str
    credits: tuple[float, ...]
    tasks: tuple[int, ...] | None


@dataclass(frozen=True)
class EpisodeReply:
    """The reply for one episode (or window)."""

    episode_id: int
    agents: tuple[AgentReply, ...]
    summary: str


def short_repr(value: Any) -> str:
    try:
        text = json.dumps(value) if isinstance(value, str) else repr(value)
    except RecursionError:
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def decode_object(text: str) -> tuple[dict[str, Any], bool]:
    """The JSON object in ``text`` and whether finding it needed a repair."""
    if not isinstance(text, str):
        raise ReplyError(f"reply is not text but {type(text).__name__}")
    stripped = text.strip()
    try:
        obj = json.loads(stripped)
        if isinstance(obj, dict):
            return obj, False
    except (ValueError, RecursionError):
        pass
    decoder = json.JSONDecoder(strict=False)  # strict=False: raw newlines inside strings
    for candidate in [m.group(1) for m in _FENCE.finditer(stripped)] + [stripped]:
        for start in itertools.islice((i for i, ch in enumerate(candidate) if ch == "{"), _MAX_STARTS):
            try:
                obj, _ = decoder.raw_decode(candidate, start)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                return obj, True
    start = stripped.find("{")
    if start < 0:
        raise ReplyError("reply contains no JSON object; answer with one JSON object only")
    if _unclosed(stripped[start:]):
        raise ReplyError("reply ends before its JSON object is complete (cut off?); keep the rationales short")
    where = ""
    try:
        decoder.raw_decode(stripped, start)
    except json.JSONDecodeError as err:
        where = f": {err.msg} at line {err.lineno} column {err.colno}"
    except (ValueError, RecursionError):
        pass
    raise ReplyError(f"reply is not one valid JSON object{where}; answer with one JSON object only")


def _unclosed(text: str) -> bool:
    """Whether ``text`` ends inside a string or with brackets still open (a cut-off reply)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:  # a backslash escapes the next character; an unescaped quote ends the string
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return in_string or depth > 0


def parse_number(value: Any, where: str) -> tuple[float, bool]:
    repaired = isinstance(value, str)  # a numeric string is a repair
    if not repaired and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ReplyError(f"{where}: expected a number, got {short_repr(value)}")
    try:
        number = float(value.strip() if repaired else value)
        struct.pack("<f", number)  # OverflowError when float32 (the stored dtype) would make it ±inf
    except ValueError:
        raise ReplyError(f"{where}: expected a number, got {short_repr(value)}") from None
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ReplyError(f"{where}: expected a finite number of float32 range (|x| < 3.4e38), got {short_repr(value)}")
    return number, repaired


def parse_task(value: Any, where: str, n_tasks: int | None) -> tuple[int, bool]:
    repaired = False
    if isinstance(value, str) or (isinstance(value, float) and not isinstance(value, bool)):
        number, repaired = parse_number(value, where)
        if not number.is_integer():
            raise ReplyError(f"{where}: expected an integer task, got {short_repr(value)}")
        value, repaired = int(number), True
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReplyError(f"{where}: expected an integer task, got {short_repr(value)}")
    top = TASK_MAX if n_tasks is None else min(n_tasks - 1, TASK_MAX)
    if not -1 <= value <= top:
        raise ReplyError(f"{where}: task {short_repr(value)} is out of range (allowed: -1..{top})")
    return value, repaired


def get_field(obj: dict[str, Any], key: str, where: str, kind: type | None = None, max_chars: int = 0) -> Any:
    """``obj[key]``, checked to exist and (with ``kind``) to be a ``str`` (of at most ``max_chars``) or a ``list``."""
    if key not in obj:
        raise ReplyError(f"{where}missing key {key!r}")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise ReplyError(f"{where}{key!r} must be a {'string' if kind is str else 'list'}, got {short_repr(value)}")
    if max_chars and len(value) > max_chars:
        raise ReplyError(f"{where}{key!r} has {len(value)} characters; keep it to at most {max_chars}")
    return value


def _values(
    obj: dict[str, Any], key: str, where: str, length: int, convert: Callable[[Any, str], tuple[_V, bool]]
) -> tuple[tuple[_V, ...], bool]:
    """``obj[key]`` as exactly ``length`` converted values, and whether any needed a repair."""
    raw = get_field(obj, key, where, list)
    if len(raw) != length:
        raise ReplyError(f"{where}expected {length} {key}, got {len(raw)}")
    pairs = [convert(value, f"{where}{key}[{t}]") for t, value in enumerate(raw)]
    return tuple(v for v, _ in pairs), any(fixed for _, fixed in pairs)


def _agent(
    obj: Any, prefix: str, length: int, with_tasks: bool, n_tasks: int | None, agent_id: str
) -> tuple[AgentReply, bool]:
    where = f"{prefix}{agent_id}: "
    rationale = get_field(obj, "rationale", where, str, RATIONALE_MAX_CHARS)
    credits, repaired = _values(obj, "credits", where, length, parse_number)
    tasks: tuple[int, ...] | None = None
    if with_tasks:
        tasks, fixed = _values(obj, "tasks", where, length, lambda v, w: parse_task(v, w, n_tasks))
        repaired |= fixed
    return AgentReply(agent_id, rationale, credits, tasks), repaired


def _episode(
    obj: Any,
    prefix: str,
    episode_id: int,
    length: int,
    agent_ids: Sequence[str],
    with_tasks: bool,
    n_tasks: int | None,
) -> tuple[EpisodeReply, bool]:
    if not isinstance(obj, dict):
        raise ReplyError(f"{prefix}expected a JSON object, got {short_repr(obj)}")
    entries = get_field(obj, "agents", prefix, list)
    by_id: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise ReplyError(f"{prefix}each entry of 'agents' must be an object, got {short_repr(entry)}")
        agent_id = get_field(entry, "agent_id", prefix + "an agent entry: ")
        if not isinstance(agent_id, str) or agent_id not in agent_ids:
            raise ReplyError(f"{prefix}unknown agent id {short_repr(agent_id)} (expected {', '.join(agent_ids)})")
        if agent_id in by_id:
            raise ReplyError(f"{prefix}agent {agent_id} appears twice")
        by_id[agent_id] = entry
    missing = [a for a in agent_ids if a not in by_id]
    if missing:
        raise ReplyError(f"{prefix}missing agent(s) {', '.join(missing)} (need one entry per agent)")
    repaired = list(by_id) != list(agent_ids)
    agents = []
    for agent_id in agent_ids:
        agent, fixed = _agent(by_id[agent_id], prefix, length, with_tasks, n_tasks, agent_id)
        agents.append(agent)
        repaired |= fixed
    summary = get_field(obj, "summary", prefix, str, SUMMARY_MAX_CHARS)
    return EpisodeReply(episode_id, tuple(agents), summary), repaired


def _episode_id(value: Any) -> tuple[int, bool]:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
        return int(value), True
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReplyError(f"episode_id must be an integer, got {short_repr(value)}")
    return value, False


def parse_reply(
    text: str,
    *,
    agent_ids: Sequence[str],
    episodes: Sequence[tuple[int, int]],
    with_tasks: bool,
    n_tasks: int | None,
) -> tuple[list[EpisodeReply], bool]:
    """Parse and validate a reply.

    Args:
        text: the model's reply.
        agent_ids: the agents, in the order the replies are returned.
        episodes: ``(episode_id, length)`` of each requested episode, in request order.
        with_tasks: LLM-TACA: each agent also needs ``length`` tasks.
        n_tasks: tasks must lie in ``[-1, n_tasks - 1]`` (``None``: only ``>= -1``).

    Returns:
        The replies in the order of ``episodes``, and whether the reply needed a repair.

    Raises:
        ReplyError: the reply is unusable; the message says why (quote it in a retry).
    """
    if not episodes:
        raise ValueError("parse_reply: no episodes requested")
    obj, repaired = decode_object(text)
    if len(episodes) == 1 and ("agents" in obj or "episodes" not in obj):
        (episode_id, length), prefix = episodes[0], ""
        reply, fixed = _episode(obj, prefix, episode_id, length, agent_ids, with_tasks, n_tasks)
        return [reply], repaired or fixed
    entries = get_field(obj, "episodes", "", list)
    wanted = dict(episodes)
    found: dict[int, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise ReplyError(f"each entry of 'episodes' must be an object, got {short_repr(entry)}")
        episode_id, fixed = _episode_id(get_field(entry, "episode_id", "an episode entry: "))
        repaired |= fixed
        if episode_id not in wanted:
            raise ReplyError(f"unknown episode_id {episode_id} (expected {', '.join(str(e) for e, _ in episodes)})")
        if episode_id in found:
            raise ReplyError(f"episode {episode_id} appears twice")
        found[episode_id] = entry
    missing = [str(e) for e, _ in episodes if e not in found]
    if missing:
        raise ReplyError(f"missing episode(s) {', '.join(missing)} (need one entry per episode)")
    repaired |= len(episodes) == 1 or list(found) != [e for e, _ in episodes]
    replies = []
    for episode_id, length in episodes:
        reply, fixed = _episode(
            found[episode_id], f"episode {episode_id}: ", episode_id, length, agent_ids, with_tasks, n_tasks
        )
        replies.append(reply)
        repaired |= fixed
    return replies, repaired


# ------------------------------------------------------------------------------ schema, grammar


def _episode_schema(
    agent_ids: Sequence[str], length: int, with_tasks: bool, n_tasks: int | None, episode_id: int | None
) -> dict[str, Any]:
    def array(items: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "items": items, "minItems": length, "maxItems": length}

    agent_props: dict[str, Any] = {
        "agent_id": {"type": "string", "enum": list(agent_ids)},
        "rationale": {"type": "string", "maxLength": RATIONALE_MAX_CHARS},
        "credits": array({"type": "number"}),
    }
    if with_tasks:
        top = {} if n_tasks is None else {"maximum": n_tasks - 1}
        agent_props["tasks"] = array({"type": "integer", "minimum": -1, **top})
    agent = {"type": "object", "properties": agent_props, "required": list(agent_props), "additionalProperties": False}
    props: dict[str, Any] = {} if episode_id is None else {"episode_id": {"type": "integer", "enum": [episode_id]}}
    props["agents"] = {"type": "array", "items": agent, "minItems": len(agent_ids), "maxItems": len(agent_ids)}
    props["summary"] = {"type": "string", "maxLength": SUMMARY_MAX_CHARS}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def reply_json_schema(
    agent_ids: Sequence[str], episodes: Sequence[tuple[int, int]], with_tasks: bool, n_tasks: int | None
) -> dict[str, Any]:
    """A JSON schema of exactly the requested reply (single form for one episode, else batch)."""
    if len(episodes) == 1:
        return _episode_schema(agent_ids, episodes[0][1], with_tasks, n_tasks, None)
    variants = [_episode_schema(agent_ids, length, with_tasks, n_tasks, eid) for eid, length in episodes]
    items = variants[0] if len(variants) == 1 else {"anyOf": variants}
    listed = {"type": "array", "items": items, "minItems": len(episodes), "maxItems": len(episodes)}
    return {"type": "object", "properties": {"episodes": listed}, "required": ["episodes"],
            "additionalProperties": False}  # fmt: skip


def reply_grammar(
    agent_ids: Sequence[str], episodes: Sequence[tuple[int, int]], with_tasks: bool, n_tasks: int | None
) -> str:
    """A llama.cpp GBNF grammar accepting exactly the requested reply (agents and episodes in order)."""
    rules: dict[str, str] = {}
    sep = ' ws "," ws '

    def key(name: str) -> str:
        return gbnf_literal(f'"{name}":')

    def array(kind: str, item: str, length: int) -> str:
        more = f' ("," ws {item}){{{length - 1}}}' if length > 1 else ""
        rules[f"{kind}-{length}"] = f'"[" ws {item}{more} ws "]"' if length else '"[" ws "]"'
        return f"{kind}-{length}"

    def episode(k: int, episode_id: int | None, length: int) -> str:
        agents = []
        for i, agent_id in enumerate(agent_ids):
            parts = [f"{key('agent_id')} ws {gbnf_literal(json.dumps(agent_id))}", f"{key('rationale')} ws rationale"]
            parts.append(f"{key('credits')} ws {array('credits', 'num', length)}")
            if with_tasks:
                parts.append(f"{key('tasks')} ws {array('tasks', 'task', length)}")
            rules[f"ep{k}-agent{i}"] = '"{" ws ' + sep.join(parts) + ' ws "}"'
            agents.append(f"ep{k}-agent{i}")
        head = [] if episode_id is None else [f"{key('episode_id')} ws {gbnf_literal(str(episode_id))}"]
        agents_list = f'{key("agents")} ws "[" ws ' + sep.join(agents) + ' ws "]"'
        body = [*head, agents_list, f"{key('summary')} ws summary"]
        rules[f"ep{k}"] = '"{" ws ' + sep.join(body) + ' ws "}"'
        return f"ep{k}"

    if len(episodes) == 1:
        root = episode(0, None, episodes[0][1])
    else:
        names = [episode(k, eid, length) for k, (eid, length) in enumerate(episodes)]
        root = '"{" ws ' + f'{key("episodes")} ws "[" ws ' + sep.join(names) + ' ws "]" ws "}"'
    if with_tasks:
        rules["task"] = task_rule(n_tasks)
    lines = [f"root ::= {root}"]
    lines += [f"{name} ::= {body}" for name, body in rules.items()]
    lines.append('num ::= "-"? ("0" | [1-9] [0-9]{0,2}) ("." [0-9]{1,3})?')
    return "\n".join(lines + text_rules(RATIONALE_MAX_CHARS, SUMMARY_MAX_CHARS)) + "\n"


QUOTE_MAX_CHARS = 500
"""Most characters of an invalid reply that the corrective retry sends back to the server."""


def quote(text: str, limit: int = QUOTE_MAX_CHARS) -> str:
    """``text``, or its head and tail around a marker when longer than ``limit`` (result ≤ ``limit`` chars)."""
    if len(text) <= limit:
        return text
    marker = f" […{len(text)} characters, cut…] "
    head = (limit - len(marker)) * 3 // 5
    tail = limit - len(marker) - head
    return text[:head] + marker + text[len(text) - tail :]
