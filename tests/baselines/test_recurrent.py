"""The GRU variant of ``iql-cql`` (``rnn_hidden`` > 0): sequence and step agree, agents stay
independent, memory solves a task an MLP cannot, and runs load, evaluate and pass the leaderboard checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from llmca_data.baselines.evaluate import EvalConfig, evaluate_run
from llmca_data.baselines.iql_cql import IQLCQLConfig, fit_iql_cql, train_iql_cql
from llmca_data.baselines.networks import AgentNet
from llmca_data.baselines.policy import RUN_CONFIG, RUN_WEIGHTS, load_policy
from llmca_data.leaderboard.architectures import expected_tensors, parse_spec
from llmca_data.leaderboard.checkpoint import compare_tensors, read_header

torch.set_num_threads(1)


def test_sequence_forward_equals_stepping_one_step_at_a_time() -> None:
    torch.manual_seed(0)
    net = AgentNet(obs_dim=4, n_agents=3, n_actions=5, hidden=(8,), rnn_hidden=6)
    obs = torch.randn(2, 7, 3, 4)  # [B, T, N, obs_dim]
    whole = net(obs)  # [B, T, N, A]
    for b in range(2):
        state = None
        for t in range(7):
            q, state = net.step(obs[b, t], state)
            torch.testing.assert_close(q, whole[b, t])


def test_each_agent_remembers_only_its_own_observations() -> None:
    torch.manual_seed(0)
    net = AgentNet(obs_dim=4, n_agents=2, n_actions=3, hidden=(8,), rnn_hidden=6)
    obs = torch.randn(1, 5, 2, 4)
    changed = obs.clone()
    changed[0, :3, 1] += 1.0  # agent 1's early observations differ
    a, b = net(obs), net(changed)
    torch.testing.assert_close(a[..., 0, :], b[..., 0, :])  # agent 0 unaffected
    assert not torch.allclose(a[0, 4, 1], b[0, 4, 1])  # agent 1 remembers


def _cue_episodes(n: int = 128) -> dict[str, torch.Tensor]:
    """Two-step episodes, one agent: t=0 shows a cue c (one-hot of 2), t=1 shows nothing and pays 1
    for action c. Only memory of t=0 solves t=1; the data's actions are uniform."""
    gen = torch.Generator().manual_seed(0)
    cue = torch.randint(0, 2, (n,), generator=gen)
    obs = torch.zeros(n, 2, 1, 3)  # [S, T, N, obs_dim]: features cue0, cue1, "second step"
    obs[torch.arange(n), 0, 0, cue] = 1.0
    obs[:, 1, 0, 2] = 1.0
    next_obs = torch.zeros_like(obs)
    next_obs[:, 0] = obs[:, 1]
    next_obs[:, 1, 0, 2] = 1.0  # the final observation
    action = torch.randint(0, 2, (n, 2, 1), generator=gen)
    reward = torch.zeros(n, 2, 1)
    reward[:, 1, 0] = (action[:, 1, 0] == cue).float()
    mask = torch.ones(n, 2, 1, 2, dtype=torch.bool)
    return {
        "episode_id": torch.arange(n)[:, None].expand(n, 2).contiguous(),
        "obs": obs,
        "next_obs": next_obs,
        "action": action,
        "reward": reward,
        "action_mask": mask,
        "next_action_mask": mask.clone(),
        "terminated": torch.tensor([False, True]).expand(n, 2).contiguous(),
        "truncated": torch.zeros(n, 2, dtype=torch.bool),
        "mask": torch.ones(n, 2, dtype=torch.bool),
    }


def test_the_gru_solves_a_memory_task(tmp_path: Path) -> None:
    config = IQLCQLConfig(steps=400, batch_size=32, lr=3e-3, hidden=(16,), rnn_hidden=16, device="cpu",
                          eval_every=100, eval_episodes=0, cql_alpha=0.1, tau=0.05)  # fmt: skip
    run, policy = fit_iql_cql(_cue_episodes(), {"env_id": "cue", "reward": "env"}, tmp_path / "run", config)
    mask = np.ones((1, 2), np.bool_)
    for reloaded in (policy, load_policy(run)):
        for cue in (0, 1):
            reloaded.reset()
            first = np.zeros((1, 3), np.float32)
            first[0, cue] = 1.0
            reloaded.act(first, mask)
            second = np.array([[0.0, 0.0, 1.0]], np.float32)
            assert reloaded.act(second, mask)[0] == cue  # remembered across the step
    assert json.loads((run / RUN_CONFIG).read_text())["rnn_hidden"] == 16


def test_gru_run_on_lbf_evaluates_and_passes_the_leaderboard_checks(lbf_dataset: Path, tmp_path: Path) -> None:
    config = IQLCQLConfig(steps=10, batch_size=4, hidden=(16,), rnn_hidden=8, device="cpu", reward="env",
                          eval_every=5, eval_episodes=1)  # fmt: skip
    run = train_iql_cql(lbf_dataset, "lbf-8x8-2p-2f", None, tmp_path / "run", config)
    body = json.loads((run / RUN_CONFIG).read_text())
    assert IQLCQLConfig.from_dict(body) == config
    result = evaluate_run(run, EvalConfig(episodes=2))
    assert len(result["returns"]) == 2

    spec, problems = parse_spec("agent-net", {k: body[k] for k in ("obs_dim", "n_agents", "n_actions", "hidden",
                                                                   "n_tasks", "rnn_hidden")})  # fmt: skip
    assert spec is not None and not problems
    header, problems = read_header(run / RUN_WEIGHTS)
    assert header is not None and not problems
    assert compare_tensors(header, expected_tensors("agent-net", spec)) == []
    assert any(name.startswith("agent_net.gru.") for name in header.tensors)
