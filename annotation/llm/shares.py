"""The shares form of the LLM critic: integer percent shares of each reward, on the reward's scale.

Input: a ``SharesQuery`` (the rewarded steps of one episode window, as the critic is shown them,
and what else the critic id asks: tasks per segment, enabling steps) and the model's reply.
Output: the reply parsed and validated (``SharesReply``), the grammar / JSON schema that admit
exactly the asked steps and agents, and the credits ``float32[L, N]`` (and tasks) of the window.

Reply (DESIGN.md §5, shares form), rationales first, keyed by agent id and by rewarded step (a
third fewer reply tokens than a list of objects, and the small model pays ~15 ms per token)::

    {"rationales": {"agent_0": "...", "agent_1": "..."}, "tasks": {"agent_0": [1, 0], ...},
     "shares": {"5": [60, 40], "9": [0, 100]}, "enablers": {"5": [[3, "agent_0"]], "9": []},
     "summary": "..."}

``tasks`` only for ``llm-taca-shares`` (one per segment: the steps up to and including each rewarded
step, then the tail when it is not empty); ``enablers`` only for ``llm-mca-temporal``.

Credits: on a rewarded step t with shown team reward r, agent i gets ``share_i / Σ shares × r``, so
the agents' credits sum to r exactly (up to float32); an all-zero reply splits r equally and says so
in ``notes``; every other step gets 0 (the plain shares critics are structural only).
``llm-mca-temporal`` then moves ``ENABLER_FRACTION`` of each named agent's credit at t, in equal
parts, to the earlier steps the reply names for that agent (at most ``ENABLERS_MAX`` per reward):
each agent's episode total is kept, per-step sums are not. This is a return decomposition, not
potential-based shaping, so a learner can exploit it: it is its own critic id and its own arm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .gbnf import gbnf_literal, task_rule, text_rules
from .reply import ReplyError, decode_object, get_field, parse_number, parse_task, short_repr

RATIONALE_MAX_CHARS = 80
"""Longest rationale of a shares reply (characters)."""
SUMMARY_MAX_CHARS = 100
"""Longest summary of a shares reply (characters)."""
ENABLERS_MAX = 3
"""``llm-mca-temporal``: most earlier (t, agent) steps named per reward."""
ENABLER_FRACTION = 0.5
"""``llm-mca-temporal``: the fraction of a named agent's credit at a reward that moves to its enabling steps."""
REWARD_TOL = 1e-6
"""A step is rewarded when its shown team reward exceeds this in magnitude."""


@dataclass(frozen=True)
class SharesQuery:
    """What one shares request asks about one window ``t0 .. t0 + length - 1`` of an episode."""

    episode_id: int
    t0: int
    length: int
    rewarded: tuple[int, ...]
    """Episode steps whose shown team reward is non-zero, in order."""
    rewards: tuple[float, ...]
    """The shown team reward at each of ``rewarded``."""
    with_tasks: bool = False
    enablers: bool = False
    n_tasks: int | None = None

    def segments(self) -> list[tuple[int, int]]:
        """``(first, last)`` episode steps of each task segment: up to each rewarded step, then the tail."""
        out, start = [], self.t0
        for t in self.rewarded:
            out.append((start, t))
            start = t + 1
        if start < self.t0 + self.length:
            out.append((start, self.t0 + self.length - 1))
        return out


def shares_query(
    episode_id: int, t0: int, shown: np.ndarray, *, with_tasks: bool, enablers: bool, n_tasks: int | None
) -> SharesQuery:
    """The query of a window whose shown team rewards are ``shown`` ``float[L]`` (from step ``t0``)."""
    r = np.asarray(shown, np.float64).reshape(-1)  # [L]
    steps = np.flatnonzero(np.abs(r) > REWARD_TOL)
    return SharesQuery(episode_id, t0, int(r.size), tuple(int(t0 + k) for k in steps),
                       tuple(float(r[k]) for k in steps), with_tasks, enablers, n_tasks)  # fmt: skip


def needs_request(query: SharesQuery) -> bool:
    """Whether the model has anything to answer (a rewarded step, or tasks to assign)."""
    return bool(query.rewarded) or query.with_tasks


@dataclass(frozen=True)
class RewardShares:
    t: int
    shares: tuple[float, ...]
    """One share per agent, in agent order (integers 0–100 as asked; any non-negative number accepted)."""
    enablers: tuple[tuple[int, int], ...] = ()
    """``(step, agent index)`` pairs named as enabling this reward."""


@dataclass(frozen=True)
class SharesReply:
    rationales: tuple[str, ...]
    rewards: tuple[RewardShares, ...]
    tasks: tuple[tuple[int, ...], ...] | None
    """Per agent, one task per segment (``llm-taca-shares``)."""
    summary: str


# ----------------------------------------------------------------------------------- parsing


def _share(value: Any, where: str) -> tuple[float, bool]:
    number, repaired = parse_number(value, where)
    if number < 0:
        raise ReplyError(f"{where}: a share must be >= 0 (percent), got {short_repr(value)}")
    return number, repaired or not number.is_integer()


def _enablers(raw: Any, where: str, t: int, query: SharesQuery, agent_ids: Sequence[str]) -> list[tuple[int, int]]:
    if not isinstance(raw, list) or len(raw) > ENABLERS_MAX:
        raise ReplyError(f"{where}enablers must be a list of at most {ENABLERS_MAX} [step, agent] pairs")
    out = []
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int) and pair[1] in agent_ids):
            raise ReplyError(f"{where}an enabler must be [step, agent id], got {short_repr(pair)}")
        if not query.t0 <= pair[0] < t:
            raise ReplyError(f"{where}enabler step {pair[0]} must be an earlier step, {query.t0}..{t - 1}")
        out.append((int(pair[0]), list(agent_ids).index(pair[1])))
    return sorted(set(out))


def _keyed(obj: dict[str, Any], key: str, keys: Sequence[str]) -> tuple[dict[str, Any], bool]:
    """``obj[key]``, an object with exactly ``keys`` (any order: another order is a repair)."""
    value = get_field(obj, key, "")
    if not isinstance(value, dict):
        raise ReplyError(f"{key!r} must be an object keyed by {', '.join(keys) or 'nothing'}, got {short_repr(value)}")
    missing, extra = [k for k in keys if k not in value], [k for k in value if k not in keys]
    if missing or extra:
        raise ReplyError(f"{key!r} must have exactly the keys {', '.join(keys) or '(none)'}; "
                         f"missing {missing}, unexpected {[short_repr(k) for k in extra[:3]]}")  # fmt: skip
    return value, list(value) != list(keys)


def parse_shares(text: str, query: SharesQuery, agent_ids: Sequence[str]) -> tuple[SharesReply, bool]:
    """Parse and validate a shares reply; raises ``ReplyError`` (to quote in a retry) when unusable."""
    obj, repaired = decode_object(text)
    steps = [str(t) for t in query.rewarded]
    rationales, fixed = _keyed(obj, "rationales", agent_ids)
    repaired |= fixed
    for agent_id in agent_ids:
        get_field(rationales, agent_id, "rationales: ", str, RATIONALE_MAX_CHARS)
    tasks: list[tuple[int, ...]] = []
    if query.with_tasks:
        by_agent, fixed = _keyed(obj, "tasks", agent_ids)
        repaired |= fixed
        segments = len(query.segments())
        for agent_id in agent_ids:
            raw = get_field(by_agent, agent_id, "tasks: ", list)
            if len(raw) != segments:
                raise ReplyError(f"tasks: {agent_id}: expected {segments} tasks (one per segment), got {len(raw)}")
            parsed = [parse_task(v, f"tasks: {agent_id}[{k}]", query.n_tasks) for k, v in enumerate(raw)]
            tasks.append(tuple(v for v, _ in parsed))
            repaired |= any(fixed for _, fixed in parsed)
    by_step, fixed = _keyed(obj, "shares", steps)
    repaired |= fixed
    named: dict[str, Any] = {}
    if query.enablers:
        named, fixed = _keyed(obj, "enablers", steps)
        repaired |= fixed
    rewards = []
    for t, key in zip(query.rewarded, steps, strict=True):
        where = f"t={t}: "
        raw = get_field(by_step, key, "shares: ", list)
        if len(raw) != len(agent_ids):
            raise ReplyError(f"{where}expected {len(agent_ids)} shares (one per agent), got {len(raw)}")
        shares = [_share(v, f"{where}shares[{i}]") for i, v in enumerate(raw)]
        repaired |= any(fixed for _, fixed in shares)
        enablers = _enablers(named[key], where, t, query, agent_ids) if query.enablers else []
        rewards.append(RewardShares(t, tuple(v for v, _ in shares), tuple(enablers)))
    summary = get_field(obj, "summary", "", str, SUMMARY_MAX_CHARS)
    reply = SharesReply(tuple(rationales[a] for a in agent_ids), tuple(rewards),
                        tuple(tasks) if query.with_tasks else None, summary)  # fmt: skip
    return reply, repaired


# ----------------------------------------------------------------------------------- credits


def shares_credits(
    reply: SharesReply, query: SharesQuery, n_agents: int
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Credits ``float32[L, N]`` of the window, tasks ``int16[L, N]`` (or None) and notes on fallbacks."""
    credits = np.zeros((query.length, n_agents), np.float64)  # [L, N]
    notes = []
    for entry, r in zip(reply.rewards, query.rewards, strict=True):
        shares = np.asarray(entry.shares, np.float64)  # [N]
        total = shares.sum()
        if not (math.isfinite(total) and total > 0):
            notes.append(f"t={entry.t}: all shares 0, reward split equally")
            weights = np.full(n_agents, 1.0 / n_agents)
        else:
            weights = shares / total
        credits[entry.t - query.t0] = weights * r
    if query.enablers:  # after every reward is placed, so a moved amount never moves twice
        for entry in reply.rewards:
            row = entry.t - query.t0
            for agent in sorted({a for _, a in entry.enablers}):
                steps = [s for s, a in entry.enablers if a == agent]
                moved = ENABLER_FRACTION * credits[row, agent]
                credits[row, agent] -= moved
                for s in steps:
                    credits[s - query.t0, agent] += moved / len(steps)
    tasks = None
    if reply.tasks is not None:
        tasks = np.full((query.length, n_agents), -1, np.int16)  # [L, N]
        for k, (first, last) in enumerate(query.segments()):
            for i in range(n_agents):
                tasks[first - query.t0 : last - query.t0 + 1, i] = reply.tasks[i][k]
    return credits.astype(np.float32), tasks, notes


# ------------------------------------------------------------------------- grammar, schema, cue


def shares_grammar(query: SharesQuery, agent_ids: Sequence[str]) -> str:
    """A llama.cpp GBNF grammar accepting exactly the reply to ``query`` (agents and steps in order)."""
    sep = ' ws "," ws '

    def key(name: str) -> str:
        return gbnf_literal(f"{json.dumps(name)}:")

    def keyed(items: Sequence[tuple[str, str]]) -> str:
        return '"{" ws ' + sep.join(f"{key(k)} ws {v}" for k, v in items) + ' ws "}"' if items else '"{" ws "}"'

    def listed(item: str, n: int) -> str:
        return '"[" ws ' + sep.join([item] * n) + ' ws "]"' if n else '"[" ws "]"'

    steps = [str(t) for t in query.rewarded]
    rules: dict[str, str] = {}
    body = [("rationales", keyed([(a, "rationale") for a in agent_ids]))]
    if query.with_tasks:
        body.append(("tasks", keyed([(a, listed("task", len(query.segments()))) for a in agent_ids])))
    body.append(("shares", keyed([(t, listed("share", len(agent_ids))) for t in steps])))
    if query.enablers:
        enablers = []
        for k, t in enumerate(query.rewarded):
            if t > query.t0:
                rules[f"step{k}"] = " | ".join(gbnf_literal(str(s)) for s in range(query.t0, t))
                rules[f"enabler{k}"] = f'"[" ws step{k} "," ws agent-id ws "]"'
                enablers.append((str(t), f'"[" ws (enabler{k} ("," ws enabler{k}){{0,{ENABLERS_MAX - 1}}})? ws "]"'))
            else:
                enablers.append((str(t), '"[" ws "]"'))
        body.append(("enablers", keyed(enablers)))
    body.append(("summary", "summary"))
    lines = [f"root ::= {keyed(body)}", *(f"{name} ::= {rule}" for name, rule in rules.items())]
    lines.append('share ::= "100" | [1-9] [0-9]? | "0"')
    lines.append("agent-id ::= " + " | ".join(gbnf_literal(json.dumps(a)) for a in agent_ids))
    if query.with_tasks:
        lines.append(f"task ::= {task_rule(query.n_tasks)}")
    return "\n".join(lines + text_rules(RATIONALE_MAX_CHARS, SUMMARY_MAX_CHARS, newlines=False)) + "\n"


def shares_json_schema(query: SharesQuery, agent_ids: Sequence[str]) -> dict[str, Any]:
    """A JSON schema of the reply to ``query`` (for ``json_schema`` / ``json_object`` response formats)."""

    def array(items: dict[str, Any], n: int | None = None) -> dict[str, Any]:
        bounds = {"maxItems": ENABLERS_MAX} if n is None else {"minItems": n, "maxItems": n}
        return {"type": "array", "items": items, **bounds}

    def obj(props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    steps = [str(t) for t in query.rewarded]
    rationale = {"type": "string", "maxLength": RATIONALE_MAX_CHARS}
    props: dict[str, Any] = {"rationales": obj({a: rationale for a in agent_ids})}
    if query.with_tasks:
        top = {} if query.n_tasks is None else {"maximum": query.n_tasks - 1}
        task = {"type": "integer", "minimum": -1, **top}
        props["tasks"] = obj({a: array(task, len(query.segments())) for a in agent_ids})
    props["shares"] = obj({t: array({"type": "integer", "minimum": 0, "maximum": 100}, len(agent_ids)) for t in steps})
    if query.enablers:
        pair = {"type": "array", "prefixItems": [{"type": "integer", "minimum": query.t0},
                                                 {"type": "string", "enum": list(agent_ids)}]}  # fmt: skip
        props["enablers"] = obj({t: array(pair) for t in steps})
    props["summary"] = {"type": "string", "maxLength": SUMMARY_MAX_CHARS}
    return obj(props)


def shares_cue(query: SharesQuery, agent_ids: Sequence[str]) -> str:
    """The closing instruction of a shares request: exactly which agents, steps and segments to answer."""
    steps = ", ".join(f"t={t}" for t in query.rewarded) or "none (an empty object)"
    cue = f'Answer with one JSON object: agents {", ".join(agent_ids)} in this order; "shares" for {steps}'
    if query.with_tasks:
        cue += "; tasks for segments " + ", ".join(f"t={a}..{b}" for a, b in query.segments())
    if query.enablers:
        cue += f"; up to {ENABLERS_MAX} enablers per reward"
    return cue + "."


def max_tokens_shares(query: SharesQuery, n_agents: int) -> int:
    """A ``max_tokens`` that fits a grammar-constrained shares reply to ``query``."""
    per_agent = math.ceil(RATIONALE_MAX_CHARS / 2.5) + 8 + (3 * len(query.segments()) + 8 if query.with_tasks else 0)
    per_reward = 8 + 4 * n_agents + (14 * ENABLERS_MAX + 6 if query.enablers else 0)
    total = n_agents * per_agent + len(query.rewarded) * per_reward + math.ceil(SUMMARY_MAX_CHARS / 2.5) + 24
    return math.ceil(total * 1.1) + 32
