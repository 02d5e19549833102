"""Contract and learning tests of the torch baselines (``bc``, ``filtered-bc``, ``iql-cql``, ``vdn-cql``,
``qmix-cql``); ``test_registry.py`` holds the contract every registered algorithm meets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from llmca_data.baselines.bc import BCConfig, FilteredBCConfig, fit_bc, train_bc
from llmca_data.baselines.iql_cql import IQLCQLConfig, fit_iql_cql, td_targets, train_iql_cql
from llmca_data.baselines.networks import AgentNet, masked_argmax
from llmca_data.baselines.policy import RUN_CONFIG, RUN_METRICS, RUN_WEIGHTS, DecentralisedPolicy, load_policy
from llmca_data.baselines.qmix_cql import QMIXCQLConfig, QMixer, fit_qmix_cql, qmix_targets, train_qmix_cql
from llmca_data.baselines.training import TrainConfig
from llmca_data.baselines.vdn_cql import VDNCQLConfig, fit_vdn_cql, train_vdn_cql, vdn_targets
from llmca_data.collect import CollectConfig, collect
from llmca_data.envs import make_env
from llmca_data.loaders import OfflineDataset
from llmca_data.rollout import eval_seed

torch.set_num_threads(1)

ENV = "lbf-8x8-2p-2f"
SMALL = {"steps": 20, "batch_size": 32, "hidden": (32,), "eval_every": 5, "device": "cpu", "seed": 3}

TRAINERS: dict[str, tuple[Callable[..., Path], Callable[..., Any], type[TrainConfig], dict[str, Any]]] = {
    "bc": (train_bc, fit_bc, BCConfig, {}),
    "filtered-bc": (train_bc, fit_bc, FilteredBCConfig, {"top_fraction": 0.5}),
    "iql-cql": (train_iql_cql, fit_iql_cql, IQLCQLConfig, {"reward": "env"}),
    "vdn-cql": (train_vdn_cql, fit_vdn_cql, VDNCQLConfig, {}),
    "qmix-cql": (train_qmix_cql, fit_qmix_cql, QMIXCQLConfig, {}),
}


@pytest.mark.parametrize("algo", list(TRAINERS))
def test_contract(algo: str, lbf_dataset: Path, tmp_path: Path) -> None:
    train, fit, config_cls, extra = TRAINERS[algo]
    config = config_cls(**SMALL, **extra)
    run = train(lbf_dataset, ENV, None, tmp_path / "run", config)

    body = json.loads((run / RUN_CONFIG).read_text())
    assert body["algo"] == algo and body["env_id"] == ENV
    assert (body["n_agents"], body["obs_dim"], body["n_actions"]) == (2, 12, 6)
    assert body["seed"] == 3 and body["hidden"] == [32] and "tiers" in body and "reward" in body
    assert config_cls.from_dict(body) == config
    assert config_cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config

    rows = [json.loads(line) for line in (run / RUN_METRICS).read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert all(np.isfinite(r["loss"]) and r["val_loss"] is not None for r in rows)

    from safetensors import safe_open

    with safe_open(str(run / RUN_WEIGHTS), framework="pt") as f:  # safetensors: no pickle involved
        names = list(f.keys())
    assert any(k.startswith("agent_net.") for k in names)
    assert all(k.startswith(("agent_net.", "mixer.") if algo == "qmix-cql" else "agent_net.") for k in names)

    # The same training in memory (same data, config and seed) is the reference the reloaded policy must match.
    data = OfflineDataset.open(lbf_dataset, ENV).transitions(reward=extra.get("reward", "team"))
    in_memory = fit(data, {"env_id": ENV}, tmp_path / "again", config)[1]
    policy = load_policy(run)
    assert policy.algo == algo and policy.n_agents == 2
    obs, mask = data["obs"].numpy(), data["action_mask"].numpy()
    rng = np.random.default_rng(0)
    for m in range(0, obs.shape[0], 7):
        random_mask = mask[m] & (rng.random(mask[m].shape) < 0.5)
        random_mask[:, 0] = True  # the no-op stays legal
        for msk in (mask[m], random_mask):
            a = policy.act(obs[m], msk)
            assert a.dtype == np.int64 and a.shape == (2,)
            assert msk[np.arange(2), a].all(), "picked an illegal action"
            np.testing.assert_array_equal(a, in_memory.act(obs[m], msk))


def _mean_return(policy: DecentralisedPolicy, episodes: int) -> float:
    env = make_env(ENV)
    returns = []
    for i in range(episodes):
        obs, total, done = env.reset(eval_seed(i)), 0.0, False
        while not done:
            step = env.step(policy.act(obs, env.action_mask()))
            obs, total, done = step.obs, total + float(step.reward_env.sum()), step.terminated or step.truncated
        returns.append(total)
    return float(np.mean(returns))


class _Random:
    algo, n_agents = "random", 2

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.array([self.rng.choice(np.flatnonzero(m)) for m in mask], np.int64)


def test_bc_beats_random_on_expert_lbf(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    collect(root, CollectConfig(ENV, "expert", 40, seed=7, chunk_episodes=20))
    config = BCConfig(steps=400, batch_size=128, lr=1e-3, hidden=(64, 64), device="cpu", seed=0, eval_every=100)
    run = train_bc(root, ENV, ["expert"], tmp_path / "bc", config)
    bc_return, random_return = _mean_return(load_policy(run), 20), _mean_return(_Random(), 20)
    assert bc_return > random_return + 0.2, (bc_return, random_return)


def _bandit(n: int = 256) -> dict[str, torch.Tensor]:
    """One-step episodes, 2 agents, 4 actions: agent i earns 1 for action best[i], 0 otherwise.

    Action 3 is illegal everywhere (never in the data, and never chosen); data are uniform over legal actions.
    """
    gen = torch.Generator().manual_seed(0)
    best = torch.tensor([2, 1])
    obs = torch.zeros(n, 2, 3)
    obs[:, :, 0] = 1.0
    mask = torch.ones(n, 2, 4, dtype=torch.bool)
    mask[:, :, 3] = False
    action = torch.randint(0, 3, (n, 2), generator=gen)
    reward = (action == best).float()
    return {
        "episode_id": torch.arange(n),
        "obs": obs,
        "next_obs": obs.clone(),
        "action": action,
        "action_mask": mask,
        "next_action_mask": mask.clone(),
        "reward": reward,
        "terminated": torch.ones(n, dtype=torch.bool),
        "truncated": torch.zeros(n, dtype=torch.bool),
    }


def test_iql_cql_finds_known_optimal_actions(tmp_path: Path) -> None:
    config = IQLCQLConfig(
        steps=300, batch_size=64, lr=3e-3, hidden=(16,), device="cpu", eval_every=100, eval_episodes=0
    )
    run, policy = fit_iql_cql(_bandit(), {"env_id": "bandit", "reward": "env"}, tmp_path / "run", config)
    obs = np.array([[1.0, 0.0, 0.0]] * 2, np.float32)
    mask = np.array([[True, True, True, False]] * 2)
    np.testing.assert_array_equal(policy.act(obs, mask), [2, 1])
    np.testing.assert_array_equal(load_policy(run).act(obs, mask), [2, 1])


def _batch(reward: torch.Tensor) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    b = reward.shape[0]
    mask = torch.rand(b, 2, 4, generator=gen) < 0.6
    mask[..., 0] = True
    return {
        "next_obs": torch.randn(b, 2, 5, generator=gen),
        "next_action_mask": mask,
        "reward": reward,
        "terminated": torch.tensor([False, True, False, False]),
        "truncated": torch.tensor([False, False, True, False]),  # truncation still bootstraps
    }


def test_credit_reward_sets_each_agents_td_target() -> None:
    torch.manual_seed(0)
    online, target = AgentNet(5, 2, 4, (8,)), AgentNet(5, 2, 4, (8,))
    credit = torch.tensor([[0.7, -0.2], [1.0, 3.0], [0.0, 0.5], [-1.0, 2.0]])  # [B, N] e.g. credit_x
    batch, gamma = _batch(credit), 0.9
    y = td_targets(batch, online, target, gamma)  # [B, N]

    expected = torch.zeros(4, 2)
    with torch.no_grad():
        for row in range(4):
            for i in range(2):
                o = batch["next_obs"][row]  # [N, obs_dim]: agent i's net input is row i plus its id
                best = int(masked_argmax(online(o)[i], batch["next_action_mask"][row, i]))
                boot = 0.0 if bool(batch["terminated"][row]) else gamma * float(target(o)[i, best])
                expected[row, i] = credit[row, i] + boot
    torch.testing.assert_close(y, expected)
    assert torch.equal(y[1], credit[1])  # terminated: the target is exactly agent i's own credit

    swapped = td_targets(_batch(credit.flip(1)), online, target, gamma)  # swap the credit columns
    torch.testing.assert_close(swapped - y, credit.flip(1) - credit)

    # VDN ignores per-agent splits: its target uses the team reward (column 0, equal to every column).
    team = credit.sum(1, keepdim=True).expand(4, 2).clone()
    y_tot = vdn_targets(_batch(team), online, target, gamma)  # [B]
    torch.testing.assert_close(y_tot[1], team[1, 0])
    torch.testing.assert_close(y_tot - team[:, 0], (expected - credit).sum(1))


def test_config_round_trip_keeps_types() -> None:
    config = IQLCQLConfig(hidden=(7, 9), reward="credit_llm_mca", gamma=0.5)
    again = IQLCQLConfig.from_dict(json.loads(json.dumps({**config.to_dict(), "algo": "iql-cql"})))
    assert again == config and isinstance(again.hidden, tuple)
    assert dataclasses.replace(config, seed=4).seed == 4


def test_qmix_mixer_is_monotonic_and_target_uses_team_reward() -> None:
    torch.manual_seed(0)
    mixer = QMixer(n_agents=2, state_dim=6, hidden=8)
    state = torch.randn(1, 6).expand(50, 6)  # [B, S]: one random state
    for i in range(2):
        q = torch.randn(1, 2).expand(50, 2).clone()  # [B, N]
        q[:, i] = torch.linspace(-5.0, 5.0, 50)
        with torch.no_grad():
            q_tot = mixer(q, state)  # [B]
        assert (q_tot.diff() >= -1e-6).all(), f"Q_tot decreases in Q_{i}"
    q = torch.randn(16, 2, requires_grad=True)
    mixer(q, torch.randn(16, 6)).sum().backward()
    assert q.grad is not None and (q.grad >= 0).all()

    online, target = AgentNet(5, 2, 4, (8,)), AgentNet(5, 2, 4, (8,))
    team = torch.tensor([0.5, 2.0, -1.0, 0.0]).unsqueeze(1).expand(4, 2).clone()  # [B, N] reward_team
    batch, gamma = {**_batch(team), "next_state": torch.randn(4, 6)}, 0.9
    y = qmix_targets(batch, online, target, mixer, gamma)  # [B]
    torch.testing.assert_close(y[1], team[1, 0])  # terminated: exactly the team reward
    with torch.no_grad():
        best = masked_argmax(online(batch["next_obs"]), batch["next_action_mask"])  # [B, N]
        q_next = target(batch["next_obs"]).gather(-1, best.unsqueeze(-1)).squeeze(-1)  # [B, N]
        boot = gamma * mixer(q_next, batch["next_state"]) * (~batch["terminated"]).float()  # [B]
    torch.testing.assert_close(y, team[:, 0] + boot)  # truncated row 2 still bootstraps
    shifted = qmix_targets({**batch, "reward": team + 1.0}, online, target, mixer, gamma)
    torch.testing.assert_close(shifted - y, torch.ones(4))
