"""LLM prompts: line rendering per env family, windows, reward variants, versions, messages."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmca_data.annotation.llm import prompt as P
from llmca_data.envs import make_env
from llmca_data.envs.ids import EnvId
from llmca_data.policies import EpsilonPolicy, scripted_policy
from llmca_data.rollout import Episode, replay_iter, run_episode

ENVS = {"lbf-8x8-2p-2f": {}, "rware-tiny-2ag": {"max_steps": 80}, "spaceworld-10x10-3a": {}}

_POS = r"\(\d+,\d+\)"
_ACT = r"act( agent_\d+=[A-Z_]+)+"
LINE = {
    "lbf": re.compile(
        rf"^t=\d+ r=-?\d+\.\d\d \| agent_\d+ {_POS} L\d+(, agent_\d+ {_POS} L\d+)* \| "
        rf"food_\d+ ({_POS} L\d+|-)(, food_\d+ ({_POS} L\d+|-))* \| {_ACT}$"
    ),
    "rware": re.compile(
        rf"^t=\d+ r=-?\d+\.\d\d \| agent_\d+ {_POS} (up|down|left|right) (shelf_\d+|-)"
        rf"(, agent_\d+ {_POS} (up|down|left|right) (shelf_\d+|-))* \| "
        rf"req (-|shelf_\d+ {_POS}(, shelf_\d+ {_POS})*) \| {_ACT}$"
    ),
    "spaceworld": re.compile(
        rf"^t=\d+ r=-?\d+\.\d\d \| agent_\d+ {_POS} (module_\d+|-)( disabled=\d+)?"
        rf"(, agent_\d+ {_POS} (module_\d+|-)( disabled=\d+)?)* \| "
        rf"module_\d+ ({_POS} w\d (free|carried)|delivered)(, module_\d+ ({_POS} w\d (free|carried)|delivered))* \| "
        rf"debris (-|{_POS} (up|down|left|right|still)(, {_POS} (up|down|left|right|still))*) \| {_ACT}$"
    ),
}


@pytest.fixture(scope="module")
def episodes() -> dict[str, tuple[Episode, list[dict[str, Any]]]]:
    """A real rewarded episode per family (epsilon-scripted) with its per-step ``describe()``."""
    out = {}
    for env_id, kwargs in ENVS.items():
        env = make_env(env_id, **kwargs)
        ep = run_episode(env, EpsilonPolicy(scripted_policy(env_id), 0.3), 11, "medium")
        ep.episode_id = 42
        assert ep.return_team > 0
        out[env_id] = (ep, [live.describe() for _, live in replay_iter(ep, env)])
    return out


def _render(env_id: str, data: tuple[Episode, list[dict[str, Any]]], **kw: Any) -> P.RenderedEpisode:
    ep, ds = data
    return P.render_episode(env_id, ds, ep.action, ep.reward_team, episode_id=ep.episode_id, **kw)


@pytest.mark.parametrize("env_id", list(ENVS))
def test_render_lines_follow_the_family_format(env_id: str, episodes: dict[str, Any]) -> None:
    ep, ds = episodes[env_id]
    family = EnvId.parse(env_id).family
    rendered = _render(env_id, episodes[env_id])
    assert (rendered.episode_id, rendered.t0, rendered.length) == (42, 0, ep.length)
    assert len(rendered.lines) == ep.length
    names = make_env(env_id).spec.action_names
    for t, line in enumerate(rendered.lines):
        assert LINE[family].match(line), line
        assert line.startswith(f"t={t} r={round(float(ep.reward_team[t]), 2) + 0.0:.2f} | ")
        joint = " ".join(f"agent_{i}={names[a]}" for i, a in enumerate(ep.action[t]))
        assert line.endswith(f"act {joint}")
        for agent in ds[t]["agents"]:
            assert f"{agent['id']} ({agent['pos'][0]},{agent['pos'][1]})" in line
    assert rendered.header.startswith(f"grid {ds[0]['grid'][0]} rows x {ds[0]['grid'][1]} cols")


def test_lbf_food_disappears_once_collected(episodes: dict[str, Any]) -> None:
    _, ds = episodes["lbf-8x8-2p-2f"]
    lines = _render("lbf-8x8-2p-2f", episodes["lbf-8x8-2p-2f"]).lines
    for t, d in enumerate(ds):
        for food in d["food"]:
            gone = food["pos"] is None
            assert (f"{food['id']} -" in lines[t]) == gone
    assert any(f["pos"] is None for f in ds[-1]["food"])


def test_rware_shows_only_requested_shelves_and_goals_once(episodes: dict[str, Any]) -> None:
    _, ds = episodes["rware-tiny-2ag"]
    rendered = _render("rware-tiny-2ag", episodes["rware-tiny-2ag"])
    assert "goals (10,4), (10,5)" in rendered.header
    for d, line in zip(ds, rendered.lines, strict=True):
        requested = {s["id"] for s in d["shelves"] if s["requested"]}
        req_part = line.split(" | ")[2]
        assert set(re.findall(r"shelf_\d+", req_part)) == requested
        assert "goal" not in line
    assert any("shelf_" in line.split(" | ")[1] for line in rendered.lines), "some step carries a shelf"


def test_spaceworld_line_shows_carrying_disabled_status_and_debris() -> None:
    d = {
        "env_id": "spaceworld-10x10-3a",
        "t": 7,
        "grid": [10, 10],
        "station": [5, 5],
        "docks": [[4, 5], [6, 5], [5, 4], [5, 6]],
        "agents": [
            {"id": "agent_0", "pos": [2, 3], "carrying": "module_2", "disabled": 0},
            {"id": "agent_1", "pos": [2, 4], "carrying": "module_2", "disabled": 0},
            {"id": "agent_2", "pos": [9, 9], "carrying": None, "disabled": 2},
        ],
        "modules": [
            {"id": "module_0", "pos": [4, 5], "weight": 1, "status": "delivered"},
            {"id": "module_1", "pos": [0, 0], "weight": 1, "status": "free"},
            {"id": "module_2", "pos": [1, 3], "weight": 2, "status": "carried"},
        ],
        "debris": [{"pos": [3, 3], "vel": [0, -1]}, {"pos": [7, 7], "vel": [1, 0]}],
    }
    rendered = P.render_episode("spaceworld-10x10-3a", [d], np.array([[1, 1, 0]]), np.array([0.25]), episode_id=3, t0=7)
    assert rendered.lines == (
        "t=7 r=0.25 | agent_0 (2,3) module_2, agent_1 (2,4) module_2, agent_2 (9,9) - disabled=2 | "
        "module_0 delivered, module_1 (0,0) w1 free, module_2 (1,3) w2 carried | "
        "debris (3,3) left, (7,7) down | act agent_0=UP agent_1=UP agent_2=NOOP",
    )
    assert rendered.header == "grid 10 rows x 10 cols; station (5,5); docks (4,5), (6,5), (5,4), (5,6)"


@pytest.mark.parametrize("family", ["lbf", "rware", "spaceworld"])
def test_definition_examples_use_the_line_format(family: str) -> None:
    text = (P.TEMPLATE_DIR / f"defn_{family}.txt").read_text()
    examples = [line for line in text.splitlines() if line.startswith("t=")]
    assert len(examples) >= 10
    for line in examples:
        assert LINE[family].match(line), line


def test_render_rejects_inconsistent_inputs(episodes: dict[str, Any]) -> None:
    ep, ds = episodes["lbf-8x8-2p-2f"]
    with pytest.raises(ValueError, match="describes"):
        P.render_episode("lbf-8x8-2p-2f", ds[:3], ep.action[:2], ep.reward_team[:3], episode_id=1)
    with pytest.raises(ValueError, match="actions must be in"):
        P.render_episode("lbf-8x8-2p-2f", ds[:1], np.array([[0, 9]]), ep.reward_team[:1], episode_id=1)
    with pytest.raises(ValueError, match="team_reward"):
        _render("lbf-8x8-2p-2f", episodes["lbf-8x8-2p-2f"], team_reward="late")


@pytest.mark.parametrize(("length", "max_steps"), [(0, 5), (1, 5), (10, 5), (11, 5), (500, 64), (7, 1), (3, 100)])
def test_windows_cover_the_episode(length: int, max_steps: int) -> None:
    spans = P.windows(length, max_steps)
    assert [t for span in spans for t in range(*span)] == list(range(length))
    assert all(0 < t1 - t0 <= max_steps for t0, t1 in spans)
    assert len(spans) == -(-length // max_steps)
    sizes = [t1 - t0 for t0, t1 in spans]
    assert not sizes or max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        P.windows(length, 0)


def _strip_rewards(lines: tuple[str, ...]) -> list[str]:
    return [re.sub(r" r=-?\d+\.\d\d ", " r=? ", line) for line in lines]


def _rewards(lines: tuple[str, ...]) -> list[float]:
    return [float(re.search(r" r=(-?\d+\.\d\d) ", line).group(1)) for line in lines]  # type: ignore[union-attr]


@pytest.mark.parametrize("env_id", list(ENVS))
def test_delayed_and_noisy_change_only_the_rewards(env_id: str, episodes: dict[str, Any]) -> None:
    ep = episodes[env_id][0]
    true = _render(env_id, episodes[env_id])
    delayed = _render(env_id, episodes[env_id], team_reward="delayed")
    noisy = _render(env_id, episodes[env_id], team_reward="noisy", noise_std=0.5, noise_seed=1)
    for variant in (delayed, noisy):
        assert _strip_rewards(variant.lines) == _strip_rewards(true.lines)
        assert variant.header == true.header
    assert _rewards(delayed.lines)[:-1] == [0.0] * (ep.length - 1)
    assert _rewards(delayed.lines)[-1] == pytest.approx(ep.return_team, abs=0.006)
    assert _rewards(noisy.lines) != _rewards(true.lines)
    again = _render(env_id, episodes[env_id], team_reward="noisy", noise_std=0.5, noise_seed=1)
    other = _render(env_id, episodes[env_id], team_reward="noisy", noise_std=0.5, noise_seed=2)
    assert again == noisy and other != noisy


def test_windows_of_a_stressed_episode_match_the_whole(episodes: dict[str, Any]) -> None:
    ep, ds = episodes["rware-tiny-2ag"]
    for mode in ("delayed", "noisy"):
        whole = _render("rware-tiny-2ag", episodes["rware-tiny-2ag"], team_reward=mode, noise_std=0.3)
        parts: list[str] = []
        for t0, t1 in P.windows(ep.length, 30):
            window = P.render_episode(
                "rware-tiny-2ag", ds[t0:t1], ep.action[t0:t1], ep.reward_team[t0:t1], episode_id=42, t0=t0,
                team_reward=mode, noise_std=0.3, reward_episode=ep.reward_team,
            )  # fmt: skip
            assert (window.t0, window.length) == (t0, t1 - t0)
            assert window.lines[0].startswith(f"t={t0} ")
            parts += window.lines
        assert tuple(parts) == whole.lines


def test_prompt_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v = P.prompt_version("lbf-8x8-2p-2f", "llm-mca")
    assert re.fullmatch(r"[0-9a-f]{12}", v)
    assert v == P.prompt_version("lbf-10x10-3p-3f", "llm-mca"), "same family, same templates"
    versions = {P.prompt_version(e, c) for e in ENVS for c in P.CRITICS}
    assert len(versions) == 3 * len(P.CRITICS)
    copy = tmp_path / "templates"
    shutil.copytree(P.TEMPLATE_DIR, copy)
    assert P.prompt_version("lbf-8x8-2p-2f", "llm-mca", template_dir=copy) == v
    (copy / "defn_lbf.txt").write_text((copy / "defn_lbf.txt").read_text() + "One more sentence.\n")
    assert P.prompt_version("lbf-8x8-2p-2f", "llm-mca", template_dir=copy) != v
    monkeypatch.setattr(P, "TEMPLATE_DIR", copy)
    assert P.prompt_version("lbf-8x8-2p-2f", "llm-mca") != v
    rware = P.prompt_version("rware-tiny-2ag", "llm-mca")
    (copy / "defn_lbf.txt").write_text("changed again")
    assert P.prompt_version("rware-tiny-2ag", "llm-mca") == rware, "another family's file does not count"
    with pytest.raises(ValueError, match="unknown LLM critic"):
        P.prompt_version("lbf-8x8-2p-2f", "shapley")


@pytest.mark.parametrize("env_id", list(ENVS))
@pytest.mark.parametrize("critic", ["llm-mca", "llm-taca"])  # the dense form; shares: test_shares.py
def test_messages_put_the_static_part_first(env_id: str, critic: str, episodes: dict[str, Any]) -> None:
    ep, ds = episodes[env_id]
    ids = tuple(a["id"] for a in ds[0]["agents"])
    n_tasks = P.n_task_targets(ds[0])
    first = P.render_episode(env_id, ds[:5], ep.action[:5], ep.reward_team[:5], episode_id=1)
    second = P.render_episode(env_id, ds[5:], ep.action[5:], ep.reward_team[5:], episode_id=2, t0=5)
    one = P.build_messages(env_id, critic, [first], ids, n_tasks)
    two = P.build_messages(env_id, critic, [second], ids, n_tasks)
    batch = P.build_messages(env_id, critic, [first, second], ids, n_tasks)
    assert [m["role"] for m in one] == ["system", "user"]
    assert one[0] == two[0] == batch[0]
    static = P.static_prompt(env_id, critic, ids, n_tasks)
    task = static[len(one[0]["content"]) :].strip()
    assert static.startswith(one[0]["content"])
    for messages in (one, two, batch):
        assert messages[1]["content"].startswith(task)
        assert not re.search(r"\{[a-z_]+\}", messages[0]["content"] + messages[1]["content"])
    user = one[1]["content"]
    assert "EPISODE 1 (5 timesteps, t=0..4): grid" in user
    assert "\n".join(first.lines) in user
    assert user.rstrip().endswith("(one per timestep).")
    assert f"EPISODE 2 ({ep.length - 5} timesteps, t=5..{ep.length - 1})" in batch[1]["content"]
    assert '{"episodes": [...]}' in batch[1]["content"].splitlines()[-1]
    assert "Spaceworld (this benchmark's own design" in one[0]["content"] or "spaceworld" not in env_id
    if critic == "llm-taca":
        target = P.TASK_TARGETS[EnvId.parse(env_id).family]
        assert f"{target}_j it should work on (0..{n_tasks - 1}), or -1" in user
        assert "tasks" in user.splitlines()[-1]
    else:
        assert '"tasks"' not in user
    assert P.estimate_tokens(static) < 1450


def test_max_tokens_scales_with_steps_and_agents() -> None:
    base = P.max_tokens_for(2, [10], False)
    assert P.max_tokens_for(2, [20], False) > base
    assert P.max_tokens_for(3, [10], False) > base
    assert P.max_tokens_for(2, [10], True) > base
    assert P.max_tokens_for(2, [10, 10], False) >= 2 * base - 40
    # about CREDIT_TOKENS per extra number
    per_number = (P.max_tokens_for(2, [110], False) - base) / 200
    assert P.CREDIT_TOKENS <= per_number <= 1.2 * P.CREDIT_TOKENS
    # the longest reply the grammar allows fits in the budget by the same estimate
    agent = {"agent_id": "agent_0", "rationale": "x" * 200, "credits": [-999.999] * 50, "tasks": [31] * 50}
    longest = str({"agents": [agent, agent], "summary": "y" * 300})
    assert P.estimate_tokens(longest) < P.max_tokens_for(2, [50], True)


def test_estimate_tokens() -> None:
    assert P.estimate_tokens("") == 0
    assert P.estimate_tokens("abc") == 1
    assert P.estimate_tokens("x" * 35) == 10
    assert P.estimate_tokens("x" * 36) == 11
