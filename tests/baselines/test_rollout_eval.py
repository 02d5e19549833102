"""Online evaluation: fixed disjoint seeds, documented keys, eval.json written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmca_data.baselines import policy as policy_mod
from llmca_data.baselines.evaluate import EvalConfig, RandomPolicy, evaluate_policy, evaluate_run
from llmca_data.baselines.policy import RUN_EVAL, DecentralisedPolicy, RunError, save_run
from llmca_data.reference import normalized_score
from llmca_data.rollout import EVAL_SEED_BASE, episode_seed, eval_seed

ENV = "lbf-8x8-2p-2f"
KEYS = {
    "env_id",
    "episodes",
    "seeds",
    "mean_return",
    "std_return",
    "normalized_score",
    "mean_cost",
    "success_rate",
    "returns",
    "costs",
    "successes",
    "protocol",
    "act",
    "frozen_episodes",
    "frozen",
}


def test_random_policy_is_legal_and_seeded() -> None:
    mask = np.zeros((2, 6), np.bool_)
    mask[0, [0, 5]] = True
    mask[1, 3] = True
    obs = np.zeros((2, 4), np.float32)
    a = RandomPolicy(2, seed=3)
    draws = np.stack([a.act(obs, mask) for _ in range(50)])  # [50, 2]
    assert draws.dtype == np.int64
    assert set(draws[:, 0].tolist()) == {0, 5}
    assert set(draws[:, 1].tolist()) == {3}
    b = RandomPolicy(2, seed=3)
    assert np.array_equal(draws, np.stack([b.act(obs, mask) for _ in range(50)]))
    with pytest.raises(ValueError, match="agents"):
        a.act(np.zeros((3, 4), np.float32), mask)


def test_evaluate_random_policy() -> None:
    out = evaluate_policy(RandomPolicy(2, seed=0), ENV, {}, EvalConfig(episodes=4, seed_offset=2))
    assert set(out) >= KEYS
    assert out["env_id"] == ENV and out["episodes"] == 4
    assert out["seeds"] == [eval_seed(2 + i) for i in range(4)]
    assert EVAL_SEED_BASE == 2**31 and min(out["seeds"]) >= EVAL_SEED_BASE
    data_seeds = {episode_seed(b, i) for b in range(3) for i in range(100)}
    assert not data_seeds & set(out["seeds"])
    assert len(out["returns"]) == len(out["costs"]) == len(out["successes"]) == 4
    assert out["mean_return"] == pytest.approx(float(np.mean(out["returns"])))
    assert out["std_return"] == pytest.approx(float(np.std(out["returns"])))
    assert out["normalized_score"] == pytest.approx(normalized_score(ENV, out["mean_return"]))
    assert out["success_rate"] == pytest.approx(float(np.mean(out["successes"])))
    assert out["illegal_actions"] == 0
    json.dumps(out)  # JSON-serialisable as is
    again = evaluate_policy(RandomPolicy(2, seed=0), ENV, {}, EvalConfig(episodes=4, seed_offset=2))
    assert again == out


def test_eval_config_validates() -> None:
    with pytest.raises(ValueError):
        EvalConfig(episodes=0)
    with pytest.raises(ValueError):
        EvalConfig(seed_offset=-1)
    with pytest.raises(ValueError, match="epsilon"):
        EvalConfig(epsilon=1.5)
    with pytest.raises(ValueError, match="act mode"):
        EvalConfig(act="argmax")  # type: ignore[arg-type]
    assert EvalConfig().episodes == 100 and EvalConfig().act == "greedy"  # protocol v2 defaults


class StandStill:
    """Always the no-op (action 0): a deterministic policy that never collects food."""

    algo = "stand-still"
    n_agents = 2

    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.zeros(2, np.int64)


def test_epsilon_mixes_in_seeded_random_legal_actions_and_reset_is_called() -> None:
    still = StandStill()
    greedy = evaluate_policy(still, ENV, {}, EvalConfig(episodes=6))
    assert greedy["mean_return"] == 0.0 and still.resets == 6  # reset before every episode
    assert greedy["frozen_episodes"] == 6  # standing still freezes every episode
    noisy = evaluate_policy(StandStill(), ENV, {}, EvalConfig(episodes=6, epsilon=1.0))
    assert noisy["illegal_actions"] == 0 and noisy["mean_return"] > 0  # ε = 1 plays random legal actions
    assert evaluate_policy(StandStill(), ENV, {}, EvalConfig(episodes=6, epsilon=1.0)) == noisy  # reproducible


def test_wrong_action_shape_is_refused() -> None:
    class Bad:
        algo = "bad"
        n_agents = 2

        def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return np.zeros(3, np.int64)

    with pytest.raises(ValueError, match="shape"):
        evaluate_policy(Bad(), ENV, {}, EvalConfig(episodes=1))


def test_evaluate_run_writes_eval_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def load_random(config: dict[str, Any], tensors: dict[str, Any], device: str) -> DecentralisedPolicy:
        return RandomPolicy(int(config["n_agents"]), seed=int(tensors["seed"].item()))

    monkeypatch.setitem(policy_mod.ALGO_MODULES, "test-random", "llmca_data.baselines.evaluate")
    monkeypatch.setitem(policy_mod._LOADERS, "test-random", load_random)
    import torch

    run = tmp_path / "run"
    save_run(run, {"algo": "test-random", "env_id": ENV, "env_kwargs": {}, "n_agents": 2}, {"seed": torch.tensor(7)})
    out = evaluate_run(run, EvalConfig(episodes=2))
    written = json.loads((run / RUN_EVAL).read_text())
    assert written == out
    assert written["algo"] == "test-random"
    assert written["eval_config"] == {"episodes": 2, "seed_offset": 0, "epsilon": 0.0, "act": "greedy"}
    assert written["diverged"] is False  # no metrics.jsonl
    assert set(written) >= KEYS
    assert out["returns"] == evaluate_policy(RandomPolicy(2, seed=7), ENV, {}, EvalConfig(episodes=2))["returns"]
    assert not list(run.glob(".*.tmp"))

    bare = tmp_path / "bare"
    save_run(bare, {"algo": "test-random", "n_agents": 2}, {"seed": torch.tensor(7)})
    with pytest.raises(RunError, match="env_id"):
        evaluate_run(bare, EvalConfig(episodes=1))
