"""The shares form of the LLM critic: grammar, parsing, credits on the reward's scale, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from llm_replies import share_value, smollm_grammar_checker

from llmca_data.annotation.critic import run_critic
from llmca_data.annotation.llm.config import LLMConfig
from llmca_data.annotation.llm.prompt import windows
from llmca_data.annotation.llm.reply import ReplyError
from llmca_data.annotation.llm.shares import (
    ENABLER_FRACTION,
    ENABLERS_MAX,
    RewardShares,
    SharesQuery,
    SharesReply,
    parse_shares,
    shares_credits,
    shares_grammar,
    shares_json_schema,
    shares_query,
)
from llmca_data.config import ConfigError
from llmca_data.envs import make_env
from llmca_data.rollout import Episode, run_episode, tier_rng
from llmca_data.tiers import tier_policy

IDS = ("agent_0", "agent_1", "agent_2")


def _query(**kw: Any) -> SharesQuery:
    base: dict[str, Any] = {"episode_id": 4, "t0": 10, "length": 8, "rewarded": (12, 15), "rewards": (0.5, 1.0)}
    return SharesQuery(**{**base, **kw})


def _reply(query: SharesQuery, **change: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"rationales": {a: f"{a} worked" for a in IDS}}
    if query.with_tasks:
        reply["tasks"] = {a: [i % 2] * len(query.segments()) for i, a in enumerate(IDS)}
    reply["shares"] = {str(t): [50, 30, 20] for t in query.rewarded}
    if query.enablers:
        reply["enablers"] = {str(t): [[query.t0, "agent_0"], [t - 1, "agent_1"]] for t in query.rewarded}
    return {**reply, "summary": "fine", **change}


def test_query_picks_the_shown_rewarded_steps_and_segments() -> None:
    q = shares_query(7, 20, np.array([0, 0.5, 0, 0, 1e-9, -1.0]), with_tasks=True, enablers=False, n_tasks=3)
    assert q.rewarded == (21, 25) and q.rewards == (0.5, -1.0)
    assert q.segments() == [(20, 21), (22, 25)]  # the reward at the last step leaves no tail
    assert shares_query(7, 0, np.zeros(4), with_tasks=True, enablers=False, n_tasks=3).segments() == [(0, 3)]


def test_parse_valid_reply_and_repairs() -> None:
    q = _query()
    reply, repaired = parse_shares(json.dumps(_reply(q)), q, IDS)
    assert not repaired and [r.t for r in reply.rewards] == [12, 15] and reply.rewards[0].shares == (50, 30, 20)
    swapped = _reply(q)
    swapped["shares"] = {"15": ["50", 30, 20.5], "12": [50, 30, 20]}
    reply, repaired = parse_shares("Here:\n" + json.dumps(swapped), q, IDS)
    assert repaired and [r.t for r in reply.rewards] == [12, 15]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["shares"].pop("15"), "missing ['15']"),
        (lambda r: r["shares"].update({"13": [1, 1, 1]}), "unexpected ['\"13\"']"),
        (lambda r: r["shares"].update({"12": [10, 10]}), "expected 3 shares"),
        (lambda r: r["shares"].update({"12": [10, -1, 10]}), "must be >= 0"),
        (lambda r: r["shares"].update({"12": [10, "NaN", 10]}), "finite number"),
        (lambda r: r["rationales"].pop("agent_2"), "missing ['agent_2']"),
        (lambda r: r["rationales"].update(agent_0="x" * 81), "at most 80"),
        (lambda r: r.update(shares=[[1, 2, 3]]), "must be an object keyed by 12, 15"),
        (lambda r: r.pop("summary"), "missing key 'summary'"),
    ],
)
def test_parse_rejects(change: Any, message: str) -> None:
    q = _query()
    reply = _reply(q)
    change(reply)
    with pytest.raises(ReplyError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_shares(json.dumps(reply), q, IDS)


@pytest.mark.parametrize(
    ("enablers", "message"),
    [
        ([[12, "agent_0"]], "must be an earlier step"),
        ([[9, "agent_0"]], "must be an earlier step"),
        ([[11, "agent_7"]], "must be \\[step, agent id\\]"),
        ([[11, "agent_0"]] * (ENABLERS_MAX + 1), f"at most {ENABLERS_MAX}"),
    ],
)
def test_parse_rejects_bad_enablers(enablers: list[Any], message: str) -> None:
    q = _query(enablers=True)
    reply = _reply(q)
    reply["enablers"]["12"] = enablers
    with pytest.raises(ReplyError, match=message):
        parse_shares(json.dumps(reply), q, IDS)


@given(st.lists(st.lists(st.integers(0, 100), min_size=3, max_size=3), min_size=1, max_size=5),
       st.lists(st.floats(-5, 5, allow_nan=False).filter(lambda r: abs(r) > 1e-3), min_size=5, max_size=5))  # fmt: skip
def test_credits_sum_exactly_to_the_reward(shares: list[list[int]], rewards: list[float]) -> None:
    steps = tuple(range(len(shares)))
    q = SharesQuery(0, 0, len(shares) + 2, steps, tuple(rewards[: len(shares)]))
    reply = SharesReply(
        ("",) * 3, tuple(RewardShares(t, tuple(map(float, s))) for t, s in zip(steps, shares, strict=True)), None, ""
    )
    credits, _, notes = shares_credits(reply, q, 3)
    np.testing.assert_allclose(credits[: len(shares)].sum(axis=1), q.rewards, atol=1e-6)
    assert not credits[len(shares) :].any()  # unrewarded steps get 0
    assert len(notes) == sum(sum(s) == 0 for s in shares)
    for row, s in zip(credits, shares, strict=False):  # credits has 2 more (unrewarded) rows
        if sum(s) == 0:
            np.testing.assert_allclose(row, row[0])  # all-zero reply: equal split


@given(st.lists(st.lists(st.integers(0, 100), min_size=3, max_size=3), min_size=1, max_size=4), st.data())
def test_temporal_variant_keeps_every_agents_episode_total(shares: list[list[int]], data: st.DataObject) -> None:
    steps = tuple(3 + 4 * k for k in range(len(shares)))
    q = SharesQuery(0, 0, steps[-1] + 1, steps, tuple(1.0 for _ in steps), enablers=True)
    entries = []
    for t, s in zip(steps, shares, strict=True):
        pairs = data.draw(st.lists(st.tuples(st.integers(0, t - 1), st.integers(0, 2)), max_size=ENABLERS_MAX))
        entries.append(RewardShares(t, tuple(map(float, s)), tuple(sorted(set(pairs)))))
    temporal, _, _ = shares_credits(SharesReply(("",) * 3, tuple(entries), None, ""), q, 3)
    plain, _, _ = shares_credits(SharesReply(("",) * 3, tuple(entries), None, ""), _plain(q), 3)
    np.testing.assert_allclose(temporal.sum(axis=0), plain.sum(axis=0), atol=1e-5)
    for entry in entries:
        for agent in {a for _, a in entry.enablers}:
            expected = (1 - ENABLER_FRACTION) * plain[entry.t, agent]
            assert temporal[entry.t, agent] >= expected - 1e-6  # later moves only add to a rewarded step


def _plain(q: SharesQuery) -> SharesQuery:
    return SharesQuery(q.episode_id, q.t0, q.length, q.rewarded, q.rewards)


def test_tasks_fill_their_segments() -> None:
    q = _query(with_tasks=True, n_tasks=3)
    reply, _ = parse_shares(json.dumps(_reply(q)), q, IDS)
    _, tasks, _ = shares_credits(reply, q, 3)
    assert tasks is not None and tasks.shape == (8, 3)
    assert (tasks[:, 1] == 1).all() and (tasks[:, 0] == 0).all()
    bad = _reply(q)
    bad["tasks"]["agent_0"] = [0]
    with pytest.raises(ReplyError, match="expected 3 tasks"):
        parse_shares(json.dumps(bad), q, IDS)


@pytest.mark.parametrize("kind", ["mca", "taca", "temporal"])
def test_llama_cpp_grammar_admits_exactly_the_asked_reply(kind: str) -> None:
    q = _query(with_tasks=kind == "taca", n_tasks=3 if kind == "taca" else None, enablers=kind == "temporal")
    check = smollm_grammar_checker()
    grammar = shares_grammar(q, IDS)
    good = _reply(q)
    assert check(grammar, json.dumps(good)) == "ok"
    assert check(grammar, json.dumps(good, separators=(",", ":"))) == "ok"
    assert check(grammar, json.dumps(good, indent=1)) != "ok"  # no newlines: every reply token counts
    variants = [
        lambda r: r["shares"].pop("15"),
        lambda r: r["shares"].update({"13": [1, 1, 1]}),
        lambda r: r.update(shares={"13": [1, 1, 1], "15": [1, 1, 1]}),
        lambda r: r["shares"].update({"12": [101, 0, 0]}),
        lambda r: r["shares"].update({"12": [1, 2]}),
        lambda r: r.update(rationales=dict(reversed(r["rationales"].items()))),
    ]
    if kind == "temporal":
        variants += [
            lambda r: r["enablers"].update({"12": [[12, "agent_0"]]}),
            lambda r: r["enablers"].update({"12": [[11, "agent_0"]] * (ENABLERS_MAX + 1)}),
        ]
    if kind == "taca":
        variants += [
            lambda r: r["tasks"].update(agent_0=[0, 0]),
            lambda r: r["tasks"].update(agent_0=[3, 0, 0]),
        ]
    for change in variants:
        bad = json.loads(json.dumps(good))
        change(bad)
        assert check(grammar, json.dumps(bad)) != "ok", bad
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    assert check(json_schema_to_gbnf(json.dumps(shares_json_schema(q, IDS))), json.dumps(good)) == "ok"


def test_config_refuses_what_the_shares_form_cannot_do() -> None:
    with pytest.raises(ConfigError, match="noisy"):
        LLMConfig(critic="llm-mca-shares", team_reward="noisy")
    with pytest.raises(ConfigError, match="episodes-per-prompt 1"):
        LLMConfig(critic="llm-taca-shares", episodes_per_prompt=4)
    assert LLMConfig(critic="llm-mca-temporal", team_reward="delayed").critic_id == "llm-mca-temporal-delayed"


# ----------------------------------------------------------------------- end to end, fake server

ENVS = ("lbf-10x10-3p-3f", "rware-tiny-2ag", "spaceworld-10x10-3a")


def _episodes(env_id: str, n: int = 2) -> list[Episode]:
    kwargs = {"max_steps": 60} if env_id.startswith("rware") else {}
    env = make_env(env_id, **kwargs)
    return [run_episode(env, tier_policy(env_id, "expert", tier_rng(s)), s, "expert") for s in range(n)]


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("critic", ["llm-mca-shares", "llm-taca-shares", "llm-mca-temporal"])
def test_shares_critics_on_real_episodes(fake_openai: Any, tmp_path: Path, env_id: str, critic: str) -> None:
    from test_llm_critic import llm_critic, serve

    serve(fake_openai)
    episodes = _episodes(env_id)
    kwargs = {"max_steps": 60} if env_id.startswith("rware") else {}
    llm = llm_critic(fake_openai, tmp_path / "cache.sqlite", critic=critic, max_window=20)
    outputs = run_critic(llm, episodes, make_env(env_id, **kwargs))
    asked = 0
    for episode, out in zip(episodes, outputs, strict=True):
        assert out.status == "ok", out.error
        r = episode.reward_team  # [T]
        asked += sum(critic == "llm-taca-shares" or bool(r[a:b].any()) for a, b in windows(r.size, 20))
        if critic == "llm-mca-temporal":
            np.testing.assert_allclose(out.credits.sum(), r.sum(), atol=1e-5)
            continue
        assert np.abs(out.credits.sum(axis=1) - r).max() < 1e-6  # every step, by construction
        assert not out.credits[r == 0].any()
        for t in np.flatnonzero(r):
            shares = np.array([share_value(episode.episode_id, int(t), i) for i in range(out.credits.shape[1])])
            np.testing.assert_allclose(out.credits[t], shares / shares.sum() * r[t], rtol=1e-5)
        if critic == "llm-taca-shares":
            assert out.tasks is not None and (out.tasks >= 0).all()
    assert fake_openai.request_count == asked  # a window without a reward is answered without the model


def test_delayed_reward_credits_only_the_last_step(fake_openai: Any, tmp_path: Path) -> None:
    from test_llm_critic import llm_critic, serve

    serve(fake_openai)
    episodes = _episodes("lbf-10x10-3p-3f")
    llm = llm_critic(fake_openai, tmp_path / "cache.sqlite", critic="llm-mca-shares", team_reward="delayed")
    assert llm.critic_id == "llm-mca-shares-delayed"
    outputs = run_critic(llm, episodes, make_env("lbf-10x10-3p-3f"))
    for episode, out in zip(episodes, outputs, strict=True):
        assert out.status == "ok" and not out.credits[:-1].any()
        assert out.credits[-1].sum() == pytest.approx(episode.reward_team.sum(), abs=1e-6)
