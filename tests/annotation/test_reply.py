"""LLM replies: parsing with repairs and strict failures, JSON schema, GBNF grammar."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_replies import smollm_grammar_checker

from llmca_data.annotation.llm.reply import (
    RATIONALE_MAX_CHARS,
    AgentReply,
    EpisodeReply,
    ReplyError,
    parse_reply,
    reply_grammar,
    reply_json_schema,
)
from llmca_data.errors import LlmcaError

IDS = ("agent_0", "agent_1")


def agent(agent_id: str, n: int, tasks: bool = False, value: float = 0.5) -> dict[str, Any]:
    out: dict[str, Any] = {"agent_id": agent_id, "rationale": f"{agent_id} did well", "credits": [value] * n}
    if tasks:
        out["tasks"] = [1] * n
    return out


def single(n: int = 3, tasks: bool = False, ids: tuple[str, ...] = IDS) -> dict[str, Any]:
    return {"agents": [agent(a, n, tasks) for a in ids], "summary": "the team did fine"}


def batch(spans: list[tuple[int, int]], tasks: bool = False) -> dict[str, Any]:
    return {"episodes": [{"episode_id": e, **single(n, tasks)} for e, n in spans]}


def parse(obj: Any, spans: list[tuple[int, int]] | None = None, tasks: bool = False, n_tasks: int | None = 4) -> Any:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return parse_reply(text, agent_ids=IDS, episodes=spans or [(7, 3)], with_tasks=tasks, n_tasks=n_tasks)


# --------------------------------------------------------------------------------------- valid


def test_valid_single_reply() -> None:
    replies, repaired = parse(single(3, tasks=True), tasks=True)
    assert not repaired
    assert replies == [
        EpisodeReply(
            7,
            (
                AgentReply("agent_0", "agent_0 did well", (0.5, 0.5, 0.5), (1, 1, 1)),
                AgentReply("agent_1", "agent_1 did well", (0.5, 0.5, 0.5), (1, 1, 1)),
            ),
            "the team did fine",
        )
    ]


def test_valid_batch_reply_and_mca_ignores_tasks() -> None:
    replies, repaired = parse(batch([(3, 2), (9, 4)], tasks=True), [(3, 2), (9, 4)])
    assert not repaired
    got = [(r.episode_id, len(r.agents[0].credits), r.agents[1].tasks) for r in replies]
    assert got == [(3, 2, None), (9, 4, None)]


@pytest.mark.parametrize(
    "make",
    [
        lambda s: f"Here is my answer:\n{s}\nHope this helps!",
        lambda s: f"```json\n{s}\n```",
        lambda s: f"Sure {{maybe}}. ```\n{s}\n``` done",
        lambda s: s.replace("agent_0 did well", "agent_0\ndid well"),
        lambda s: s.replace("0.5", '"0.5"'),
        lambda s: json.dumps({**json.loads(s), "agents": json.loads(s)["agents"][::-1]}),
        lambda s: json.dumps({"episodes": [{"episode_id": 7, **json.loads(s)}]}),
        lambda s: s.replace('"tasks": [1, 1, 1]', '"tasks": [1.0, "2", 3]'),
    ],
    ids=["prose", "fence", "fence-and-braces", "raw-newline", "numeric-strings", "agent-order", "batch-shape", "tasks"],
)
def test_repaired_replies(make: Callable[[str], str]) -> None:
    replies, repaired = parse(make(json.dumps(single(3, tasks=True))), tasks=True)
    assert repaired
    assert [a.agent_id for a in replies[0].agents] == list(IDS)
    assert replies[0].agents[0].credits == (0.5, 0.5, 0.5)


def test_batch_in_another_order_is_returned_in_request_order() -> None:
    replies, repaired = parse(batch([(9, 4), (3, 2)]), [(3, 2), (9, 4)])
    assert repaired
    assert [r.episode_id for r in replies] == [3, 9]


# -------------------------------------------------------------------------------------- strict


def _drop(obj: dict[str, Any], *path: Any) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    target = obj
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return obj


def _set(obj: dict[str, Any], value: Any, *path: Any) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


GOOD = single(3, tasks=True)
STRICT: list[tuple[str, Any, str]] = [
    ("not-json", "I think agent_0 did most of the work.", "no JSON object"),
    ("broken", '{"agents": [}, "summary": "x"}', "not one valid JSON object"),
    ("truncated", json.dumps(GOOD)[:80], "cut off"),
    ("top-level-list", json.dumps([1, 2]), "no JSON object"),
    ("missing-agent", _set(GOOD, GOOD["agents"][:1], "agents"), "missing agent(s) agent_1"),
    ("unknown-agent", _set(GOOD, "agent_9", "agents", 1, "agent_id"), 'unknown agent id "agent_9"'),
    ("duplicate-agent", _set(GOOD, "agent_0", "agents", 1, "agent_id"), "agent agent_0 appears twice"),
    ("short-credits", _set(GOOD, [0.1, 0.2], "agents", 1, "credits"), "agent_1: expected 3 credits, got 2"),
    ("long-tasks", _set(GOOD, [0, 0, 0, 0], "agents", 0, "tasks"), "agent_0: expected 3 tasks, got 4"),
    ("nan", json.dumps(GOOD).replace("0.5", "NaN", 1), "agent_0: credits[0]: expected a finite number"),
    ("infinity", json.dumps(GOOD).replace("0.5", "-Infinity", 1), "expected a finite number"),
    ("huge", json.dumps(GOOD).replace("0.5", "1e999", 1), "expected a finite number"),
    ("nan-string", _set(GOOD, "nan", "agents", 0, "credits", 2), "credits[2]: expected a finite number"),
    ("word", _set(GOOD, "high", "agents", 0, "credits", 1), 'credits[1]: expected a number, got "high"'),
    ("bool", _set(GOOD, True, "agents", 0, "credits", 1), "expected a number, got True"),
    ("null", _set(GOOD, None, "agents", 0, "credits", 1), "expected a number, got None"),
    ("task-high", _set(GOOD, 4, "agents", 1, "tasks", 0), "agent_1: tasks[0]: task 4 is out of range (allowed: -1..3)"),
    ("task-low", _set(GOOD, -2, "agents", 1, "tasks", 0), "out of range"),
    ("task-float", _set(GOOD, 1.5, "agents", 1, "tasks", 0), "expected an integer task"),
    ("task-bool", _set(GOOD, False, "agents", 1, "tasks", 0), "expected an integer task"),
    ("no-rationale", _drop(GOOD, "agents", 0, "rationale"), "agent_0: missing key 'rationale'"),
    ("no-credits", _drop(GOOD, "agents", 0, "credits"), "agent_0: missing key 'credits'"),
    ("no-tasks", _drop(GOOD, "agents", 1, "tasks"), "agent_1: missing key 'tasks'"),
    ("no-summary", _drop(GOOD, "summary"), "missing key 'summary'"),
    ("no-agents", _drop(GOOD, "agents"), "missing key 'agents'"),
    ("no-agent-id", _drop(GOOD, "agents", 0, "agent_id"), "missing key 'agent_id'"),
    ("rationale-type", _set(GOOD, ["a"], "agents", 0, "rationale"), "'rationale' must be a string"),
    ("credits-type", _set(GOOD, "0.5 0.5 0.5", "agents", 0, "credits"), "'credits' must be a list"),
    ("agent-entry-type", _set(GOOD, "agent_1", "agents", 1), "each entry of 'agents' must be an object"),
]


@pytest.mark.parametrize(("reply", "message"), [(r, m) for _, r, m in STRICT], ids=[n for n, _, _ in STRICT])
def test_strict_failures(reply: Any, message: str) -> None:
    with pytest.raises(ReplyError) as info:
        parse(reply, tasks=True)
    assert message in str(info.value)
    assert isinstance(info.value, LlmcaError) and isinstance(info.value, ValueError)
    assert len(str(info.value)) < 200


SPANS = [(3, 2), (9, 4)]
GOOD_BATCH = batch(SPANS)
STRICT_BATCH: list[tuple[str, Any, str]] = [
    ("missing-episode", _set(GOOD_BATCH, GOOD_BATCH["episodes"][:1], "episodes"), "missing episode(s) 9"),
    ("unknown-episode", _set(GOOD_BATCH, 5, "episodes", 1, "episode_id"), "unknown episode_id 5 (expected 3, 9)"),
    ("duplicate-episode", _set(GOOD_BATCH, 3, "episodes", 1, "episode_id"), "episode 3 appears twice"),
    ("no-episode-id", _drop(GOOD_BATCH, "episodes", 0, "episode_id"), "missing key 'episode_id'"),
    ("episode-id-type", _set(GOOD_BATCH, 3.5, "episodes", 0, "episode_id"), "episode_id must be an integer"),
    ("single-shape", single(2), "missing key 'episodes'"),
    ("wrong-length", _set(GOOD_BATCH, [1, 2], "episodes", 1, "agents", 0, "credits"), "episode 9: agent_0: expected 4"),
]


@pytest.mark.parametrize(("reply", "message"), [(r, m) for _, r, m in STRICT_BATCH], ids=[n for n, *_ in STRICT_BATCH])
def test_strict_batch_failures(reply: Any, message: str) -> None:
    with pytest.raises(ReplyError, match=re.escape(message)):
        parse(reply, SPANS)


def test_episode_id_as_numeric_string_is_repaired() -> None:
    replies, repaired = parse(_set(GOOD_BATCH, "9", "episodes", 1, "episode_id"), SPANS)
    assert repaired and [r.episode_id for r in replies] == [3, 9]


def test_tasks_without_upper_bound() -> None:
    replies, _ = parse(_set(GOOD, [-1, 0, 250], "agents", 0, "tasks"), tasks=True, n_tasks=None)
    assert replies[0].agents[0].tasks == (-1, 0, 250)


# ------------------------------------------------------------------------------------ property

KEYS = ["agents", "episodes", "episode_id", "agent_id", "rationale", "credits", "tasks", "summary", "x"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(IDS),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(KEYS), kids, max_size=4),
    max_leaves=25,
)
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_reply_errors(text: str, spans: list[tuple[int, int]]) -> None:
    try:
        replies, _ = parse_reply(text, agent_ids=IDS, episodes=spans, with_tasks=True, n_tasks=4)
    except ReplyError:
        return
    for reply in replies:
        assert all(math.isfinite(c) for a in reply.agents for c in a.credits)


@QUICK
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_reply_error(text: str) -> None:
    _only_reply_errors(text, [(7, 3)])
    _only_reply_errors("{" + text, [(7, 3), (8, 1)])


@QUICK
@given(json_values, st.booleans())
def test_arbitrary_json_raises_only_reply_error(value: Any, wrap: bool) -> None:
    text = json.dumps({"agents": value} if wrap else value)
    _only_reply_errors(text, [(7, 3)])
    _only_reply_errors(text, [(7, 3), (8, 1)])


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for key, child in children:
        out += _paths(child, (*prefix, key))
    return out


@QUICK
@given(st.data())
def test_mutated_valid_replies_raise_only_reply_error(data: st.DataObject) -> None:
    spans = data.draw(st.sampled_from([[(7, 3)], [(3, 2), (9, 1)]]))
    obj = single(3, tasks=True) if len(spans) == 1 else batch(spans, tasks=True)
    for _ in range(data.draw(st.integers(1, 3))):
        if not isinstance(obj, dict) or not obj:
            break
        path = data.draw(st.sampled_from(_paths(obj)[1:]))
        obj = _set(obj, data.draw(json_values), *path) if data.draw(st.booleans()) else _drop(obj, *path)
    text = json.dumps(obj)
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(text)))
        text = text[:cut] + data.draw(st.text(max_size=5)) + text[cut + data.draw(st.integers(0, 5)) :]
    _only_reply_errors(text, spans)


credits_st = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@QUICK
@given(st.data(), st.integers(1, 3), st.lists(st.integers(0, 12), min_size=1, max_size=3))
def test_round_trip(data: st.DataObject, n_agents: int, lengths: list[int]) -> None:
    ids = tuple(f"agent_{i}" for i in range(n_agents))
    spans = [(100 + k, n) for k, n in enumerate(lengths)]
    want = [
        EpisodeReply(
            eid,
            tuple(
                AgentReply(
                    a,
                    data.draw(st.text(max_size=20)),
                    tuple(data.draw(st.lists(credits_st, min_size=n, max_size=n))),
                    tuple(data.draw(st.lists(st.integers(-1, 5), min_size=n, max_size=n))),
                )
                for a in ids
            ),
            data.draw(st.text(max_size=20)),
        )
        for eid, n in spans
    ]

    def episode(r: EpisodeReply) -> dict[str, Any]:
        agents = [
            {"agent_id": a.agent_id, "rationale": a.rationale, "credits": a.credits, "tasks": a.tasks} for a in r.agents
        ]
        return {"agents": agents, "summary": r.summary}

    many = {"episodes": [{"episode_id": r.episode_id, **episode(r)} for r in want]}
    obj = episode(want[0]) if len(want) == 1 else many
    got, repaired = parse_reply(json.dumps(obj), agent_ids=ids, episodes=spans, with_tasks=True, n_tasks=6)
    assert got == want and not repaired


# ------------------------------------------------------------------------------- schema, grammar


def _validate(value: Any, schema: dict[str, Any]) -> bool:
    """A tiny JSON-schema validator for the keywords ``reply_json_schema`` uses."""
    if "anyOf" in schema:
        return any(_validate(value, s) for s in schema["anyOf"])
    kind = schema.get("type")
    checks = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }
    if kind is not None and not checks[kind]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if kind == "string" and len(value) > schema.get("maxLength", math.inf):
        return False
    low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
    if kind in ("integer", "number") and not low <= value <= high:
        return False
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf):
            return False
        return all(_validate(v, schema["items"]) for v in value)
    if kind == "object":
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and any(k not in props for k in value):
            return False
        return all(_validate(v, props[k]) for k, v in value.items() if k in props)
    return True


def _schema_cases() -> list[tuple[dict[str, Any], list[tuple[int, int]]]]:
    return [(single(3, tasks=True), [(7, 3)]), (batch([(3, 2), (9, 4)], tasks=True), [(3, 2), (9, 4)])]


@pytest.mark.parametrize(("reply", "spans"), _schema_cases())
def test_json_schema_accepts_exactly_the_reply(reply: dict[str, Any], spans: list[tuple[int, int]]) -> None:
    schema = reply_json_schema(IDS, spans, True, 4)
    json.dumps(schema)
    assert _validate(reply, schema)
    path = ("agents", 0) if len(spans) == 1 else ("episodes", 1, "agents", 0)
    assert not _validate(_set(reply, [0.5], *path, "credits"), schema)
    assert not _validate(_set(reply, [9] * spans[-1][1], *path, "tasks"), schema)
    assert not _validate(_set(reply, "agent_7", *path, "agent_id"), schema)
    assert not _validate(_drop(reply, *path, "rationale"), schema)
    if importlib.util.find_spec("jsonschema") is not None:
        import jsonschema

        jsonschema.validate(reply, schema)


def _gbnf_to_regex(grammar: str) -> str:
    """Translate the (non-recursive) GBNF subset ``reply_grammar`` emits into a Python regex."""
    rules: dict[str, str] = {}
    for line in grammar.strip().splitlines():
        name, _, body = line.partition(" ::= ")
        rules[name] = body
    token = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[\w-]+|\{\d+(?:,\d+)?\}|[()|?*+]|\s+')

    def unescape(body: str) -> list[str]:
        out, i = [], 0
        while i < len(body):
            if body[i] == "\\":
                nxt = body[i + 1]
                if nxt == "x":
                    out.append(chr(int(body[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                out.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
                i += 2
            else:
                out.append(body[i])
                i += 1
        return out

    def convert(expr: str) -> str:
        parts = []
        for tok in token.findall(expr):
            if tok.isspace():
                continue
            if tok.startswith('"'):
                parts.append(re.escape("".join(unescape(tok[1:-1]))))
            elif tok.startswith("["):
                body, neg = tok[1:-1], tok.startswith("[^")
                chars = unescape(body[1:] if neg else body)
                items, i = [], 0
                while i < len(chars):
                    if i + 2 < len(chars) and chars[i + 1] == "-":
                        items.append(f"\\u{ord(chars[i]):04x}-\\u{ord(chars[i + 2]):04x}")
                        i += 3
                    else:
                        items.append(f"\\u{ord(chars[i]):04x}")
                        i += 1
                parts.append("[" + ("^" if neg else "") + "".join(items) + "]")
            elif re.fullmatch(r"[\w-]+", tok):
                parts.append(f"(?:{convert(rules[tok])})")
            else:
                parts.append(tok if tok != "(" else "(?:")
        return "".join(parts)

    return convert(rules["root"])


def _grammar_case(spans: list[tuple[int, int]], tasks: bool) -> tuple[str, dict[str, Any]]:
    reply = single(spans[0][1], tasks) if len(spans) == 1 else batch(spans, tasks)
    return reply_grammar(IDS, spans, tasks, 4), reply


@pytest.mark.parametrize(("spans", "tasks"), [([(7, 3)], True), ([(7, 1)], False), ([(3, 2), (9, 4)], True)])
def test_grammar_accepts_exactly_the_reply(spans: list[tuple[int, int]], tasks: bool) -> None:
    grammar, reply = _grammar_case(spans, tasks)
    pattern = re.compile(_gbnf_to_regex(grammar), re.DOTALL)
    assert pattern.fullmatch(json.dumps(reply))
    assert pattern.fullmatch(json.dumps(reply, indent=2))
    assert pattern.fullmatch(json.dumps(reply, separators=(",", ":")))
    assert pattern.fullmatch(json.dumps(reply).replace("0.5", "-123.456"))
    path = ("agents", 1) if len(spans) == 1 else ("episodes", 1, "agents", 1)
    n = spans[-1][1]
    bad = [
        json.dumps(reply).replace("0.5", "0.5555"),
        json.dumps(reply).replace("0.5", "1234"),
        json.dumps(reply).replace("0.5", "05"),
        json.dumps(_set(reply, [0.5] * (n + 1), *path, "credits")),
        json.dumps(_set(reply, "agent_0", *path, "agent_id")),
        json.dumps(_set(reply, "a\nb", *path, "rationale")).replace("\\n", "\n"),
        json.dumps(_set(reply, "x" * (RATIONALE_MAX_CHARS + 1), *path, "rationale")),
        json.dumps(reply) + "\n\n\n",
    ]
    if tasks:
        bad.append(json.dumps(_set(reply, [4] * n, *path, "tasks")))
    if len(spans) > 1:
        bad.append(json.dumps({"episodes": reply["episodes"][::-1]}))
    for text in bad:
        assert not pattern.fullmatch(text), text
    assert pattern.fullmatch(json.dumps(_set(reply, "x" * (RATIONALE_MAX_CHARS - 3) + '\\"é', *path, "rationale")))


def test_grammar_escapes_odd_agent_ids() -> None:
    ids = ('a"b', "c\\d")
    grammar = reply_grammar(ids, [(1, 2)], False, None)
    reply = {"agents": [agent(a, 2) for a in ids], "summary": ""}
    assert re.fullmatch(_gbnf_to_regex(grammar), json.dumps(reply), re.DOTALL)


def test_llama_cpp_accepts_the_grammar() -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (or still compiling)")
    for spans, tasks in [([(7, 3)], True), ([(3, 2), (9, 4)], False)]:
        grammar, reply = _grammar_case(spans, tasks)
        assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
    check = smollm_grammar_checker()
    assert check("root ::= (", "x") == "grammar does not parse"
    for spans, tasks in [([(7, 3)], True), ([(3, 2), (9, 4)], False)]:
        grammar, reply = _grammar_case(spans, tasks)
        assert check(grammar, json.dumps(reply, indent=1)) == "ok"
        assert check(grammar, json.dumps(reply).replace("0.5", "0.5555")) != "ok"
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    for reply, spans in _schema_cases():
        assert check(json_schema_to_gbnf(json.dumps(reply_json_schema(IDS, spans, True, 4))), json.dumps(reply)) == "ok"
