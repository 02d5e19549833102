"""Evaluation protocol v2: act modes, frozen episodes, disjoint seeds, ``diverged``, grid reuse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmca_data.baselines.bc import BCConfig, fit_bc
from llmca_data.baselines.d3rlpy_runner import D3rlpyPolicy
from llmca_data.baselines.evaluate import (
    FROZEN_STEPS,
    PROTOCOL_VERSION,
    SAMPLING_ALGOS,
    ActModeError,
    EvalConfig,
    evaluate_policy,
    evaluate_run,
    run_diverged,
)
from llmca_data.baselines.experiment import Arm, GridConfig, run_grid
from llmca_data.baselines.networks import AgentNet, GreedyPolicy, masked_argmax, sample_legal
from llmca_data.baselines.policy import RUN_EVAL, RUN_METRICS, load_policy
from llmca_data.baselines.training import PERIODIC_EVAL_OFFSET, load_data
from llmca_data.envs import make_env
from llmca_data.errors import LlmcaError
from llmca_data.loaders import OfflineDataset
from llmca_data.policies.lbf import LBFScripted
from llmca_data.rollout import EVAL_SEED_BASE, episode_seed, policy_rng

torch.set_num_threads(1)

ENV = "lbf-8x8-2p-2f"


class StandStill:
    """Every agent always takes the no-op (action 0)."""

    algo = "stand-still"
    n_agents = 2

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.zeros(2, np.int64)


class ScriptedExpert:
    """The centralised LBF expert as a ``DecentralisedPolicy``.

    It plays in its own copy of the env, reset with the evaluation seeds in order and stepped
    with its own actions, and checks at every step that the observations it is given agree.
    """

    algo = "lbf-scripted"
    n_agents = 2

    def __init__(self, seeds: list[int]) -> None:
        self.env, self.expert, self.seeds = make_env(ENV), LBFScripted(), iter(seeds)
        self.rng = np.random.default_rng(0)
        self.obs = np.zeros(0, np.float32)

    def reset(self) -> None:
        seed = next(self.seeds)
        self.obs, self.rng = self.env.reset(seed), policy_rng(seed)
        self.expert.reset(self.env, self.rng)

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert np.array_equal(obs, np.asarray(self.obs, np.float32)), "the expert's env copy fell out of step"
        action = self.expert.act(self.env, self.rng)  # [N]
        self.obs = self.env.step(action)[0]
        return action


def test_frozen_episodes_count_stand_still_not_the_expert() -> None:
    still = evaluate_policy(StandStill(), ENV, {}, EvalConfig(episodes=4))
    assert still["frozen"] == [True] * 4 and still["frozen_episodes"] == 4
    assert make_env(ENV).spec.max_steps > FROZEN_STEPS  # so a stand-still episode can freeze at all
    config = EvalConfig(episodes=20)
    expert = evaluate_policy(ScriptedExpert(config.seeds), ENV, {}, config)
    assert expert["frozen_episodes"] == 0 and expert["frozen"] == [False] * 20
    assert expert["success_rate"] > 0.9 and expert["protocol"] == PROTOCOL_VERSION and expert["act"] == "greedy"


def test_sample_legal_draws_the_softmax_of_legal_logits() -> None:
    logits = np.array([[2.0, 1.0, 0.0, 50.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])  # [3, 4]
    mask = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]], np.bool_)  # agent 1: nothing legal
    draws = np.stack([sample_legal(logits, mask, np.random.default_rng(k)) for k in range(4000)])  # [4000, 3]
    assert draws.dtype == np.int64
    assert set(draws[:, 0].tolist()) <= {0, 1, 2} and set(draws[:, 1].tolist()) == {0}
    assert set(draws[:, 2].tolist()) == {2}
    softmax = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    assert np.bincount(draws[:, 0], minlength=3) / 4000 == pytest.approx(softmax, abs=0.03)
    again = sample_legal(logits, mask, np.random.default_rng(7))
    assert np.array_equal(again, sample_legal(logits, mask, np.random.default_rng(7)))


@pytest.fixture(scope="module")
def bc_run(lbf_dataset_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BC run (40 steps) on the session LBF dataset's expert tier."""
    data, info = load_data(lbf_dataset_master, ENV, ["expert"], "team", "cpu")
    config = BCConfig(steps=40, batch_size=32, hidden=(16,), eval_every=40, eval_episodes=1, device="cpu", seed=0)
    run_dir: Path = fit_bc(data, info, tmp_path_factory.mktemp("bc") / "run", config)[0]
    return run_dir


def _observations(steps: int = 40) -> list[tuple[np.ndarray, np.ndarray]]:
    """(obs [N, D], mask [N, A]) pairs from a seeded random walk in the real env."""
    env, rng, out = make_env(ENV), np.random.default_rng(0), []
    obs = env.reset(EVAL_SEED_BASE + 123)
    for _ in range(steps):
        mask = env.action_mask()  # [N, A]
        out.append((np.asarray(obs, np.float32), mask))
        keys = np.where(mask, rng.random(mask.shape), -1.0)  # [N, A]
        obs, _, _, terminated, truncated, _ = env.step(keys.argmax(axis=1))
        if terminated or truncated:
            obs = env.reset(EVAL_SEED_BASE + 124)
    return out


def test_bc_samples_legal_reproducible_actions_and_greedy_is_unchanged(bc_run: Path) -> None:
    policy = load_policy(bc_run)
    assert isinstance(policy, GreedyPolicy) and policy.algo in SAMPLING_ALGOS
    pairs = _observations()
    with torch.no_grad():
        expected = [masked_argmax(policy.net(torch.tensor(o)), torch.tensor(m)).numpy() for o, m in pairs]
    assert all(np.array_equal(policy.act(o, m), e) for (o, m), e in zip(pairs, expected, strict=True))

    def sampled(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.stack([policy.act_sampled(o, m, rng) for o, m in pairs for _ in range(5)])  # [S, N]

    first = sampled(1)
    masks = np.stack([m for _, m in pairs for _ in range(5)])  # [S, N, A]
    assert np.take_along_axis(masks, first[..., None], axis=-1).all()  # always legal
    assert np.array_equal(first, sampled(1)) and not np.array_equal(first, sampled(2))
    greedy = np.stack([e for e in expected for _ in range(5)])  # [S, N]
    assert (first != greedy).any()

    greedy_eval = evaluate_policy(policy, ENV, {}, EvalConfig(episodes=3))
    sample_eval = evaluate_policy(policy, ENV, {}, EvalConfig(episodes=3, act="sample"))
    assert sample_eval["act"] == "sample" and sample_eval["illegal_actions"] == 0
    assert evaluate_policy(policy, ENV, {}, EvalConfig(episodes=3, act="sample")) == sample_eval  # seeded
    assert evaluate_policy(policy, ENV, {}, EvalConfig(episodes=3)) == greedy_eval  # sampling left no trace


@pytest.mark.parametrize("algo", ["iql-cql", "vdn-cql", "qmix-cql", "ddqn-online", "d3rlpy-cql", "d3rlpy-bcq"])
def test_value_based_learners_refuse_to_sample(algo: str) -> None:
    policy = GreedyPolicy(algo, AgentNet(obs_dim=4, n_agents=2, n_actions=6, hidden=(8,)))
    with pytest.raises(ActModeError, match="--act greedy") as caught:
        evaluate_policy(policy, ENV, {}, EvalConfig(episodes=1, act="sample"))
    assert isinstance(caught.value, LlmcaError) and isinstance(caught.value, ValueError)
    with pytest.raises(ActModeError, match="greedy, sample"):
        EvalConfig(act="softmax")  # type: ignore[arg-type]


def test_eval_seeds_are_disjoint_from_data_and_validation_seeds(lbf_dataset_master: Path) -> None:
    final = EvalConfig()
    assert final.episodes == 100 and final.act == "greedy" and len(set(final.seeds)) == 100
    stored = set(OfflineDataset.open(lbf_dataset_master, ENV).episodes()["seed"].to_list())
    assert stored == {episode_seed(1, i) for i in range(12)} | {episode_seed(2, i) for i in range(8)}
    data = {episode_seed(base, i) for base in range(20) for i in range(2000)}  # collect's seeds
    assert max(data) < EVAL_SEED_BASE <= min(final.seeds)
    assert not (data | stored) & set(final.seeds)
    validation = EvalConfig(episodes=1000, seed_offset=PERIODIC_EVAL_OFFSET).seeds  # periodic evaluation
    assert not set(validation) & set(final.seeds) and not set(validation) & data


def test_eval_json_records_protocol_act_frozen_and_diverged(bc_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(bc_run, tmp_path / "run"))
    greedy = evaluate_run(run, EvalConfig(episodes=2))
    written = json.loads((run / RUN_EVAL).read_text())
    assert written == greedy
    assert (written["protocol"], written["act"], written["diverged"]) == (PROTOCOL_VERSION, "greedy", False)
    assert written["frozen_episodes"] == sum(written["frozen"]) and len(written["frozen"]) == 2
    assert written["eval_config"]["act"] == "greedy"
    sample = evaluate_run(run, EvalConfig(episodes=2, act="sample"))
    assert sample["act"] == "sample" and json.loads((run / RUN_EVAL).read_text())["act"] == "sample"

    with (run / RUN_METRICS).open("a") as f:
        f.write(json.dumps({"step": 40, "loss": 1e9, "diverged": True}) + "\n")
    assert run_diverged(run) and evaluate_run(run, EvalConfig(episodes=1))["diverged"] is True
    (run / RUN_METRICS).write_text('{"step": 1, "diverged": true}\nnot json\n{"step": 2, "diverged": false}\n')
    assert not run_diverged(run)  # the final checkpoint came back into range: the last row speaks
    (run / RUN_METRICS).write_text('{"step": 1, "diverged": false}\nnot json\n{"step": 2}\n')
    assert not run_diverged(run)
    (run / RUN_METRICS).unlink()
    assert not run_diverged(run) and evaluate_run(run, EvalConfig(episodes=1))["diverged"] is False


def test_grid_reuses_only_results_with_the_same_act_and_protocol(lbf_dataset: Path, tmp_path: Path) -> None:
    overrides = (("eval_episodes", 0), ("batch_size", 32), ("hidden", (16,)))

    def grid(episodes: int = 2) -> GridConfig:
        arms = (Arm("bc"), Arm("bc", act="sample"))
        return GridConfig(arms=arms, seeds=(0,), steps=10, eval_episodes=episodes, device="cpu", overrides=overrides)

    run, sampled = tmp_path / "bc" / "seed-0", tmp_path / "bc@sample" / "seed-0"
    greedy, sample = run_grid(lbf_dataset, ENV, None, tmp_path, grid())
    assert (greedy["arm"], greedy["act"], sample["arm"], sample["act"]) == ("bc", "greedy", "bc@sample", "sample")
    assert json.loads((sampled / RUN_EVAL).read_text())["act"] == "sample" and greedy["diverged"] is False
    # the two arms differ only in how they act: trained once, the weights copied
    assert (run / "model.safetensors").read_bytes() == (sampled / "model.safetensors").read_bytes()
    assert (sampled / "model.safetensors").stat().st_mtime_ns == (run / "model.safetensors").stat().st_mtime_ns
    weights, evaluated = (run / "model.safetensors").stat().st_mtime_ns, (run / RUN_EVAL).stat().st_mtime_ns
    assert run_grid(lbf_dataset, ENV, None, tmp_path, grid()) == [greedy, sample]  # reused
    assert (run / RUN_EVAL).stat().st_mtime_ns == evaluated

    again, _ = run_grid(lbf_dataset, ENV, None, tmp_path, grid(episodes=3))  # evaluated again, not retrained
    assert json.loads((run / RUN_EVAL).read_text())["episodes"] == 3 and again["act"] == "greedy"
    assert (run / "model.safetensors").stat().st_mtime_ns == weights

    old = json.loads((run / RUN_EVAL).read_text())
    del old["protocol"], old["act"]  # an eval.json from before protocol v2: greedy, protocol 1
    (run / RUN_EVAL).write_text(json.dumps(old))
    again, _ = run_grid(lbf_dataset, ENV, None, tmp_path, grid(episodes=3))
    assert json.loads((run / RUN_EVAL).read_text())["protocol"] == PROTOCOL_VERSION and again["act"] == "greedy"
    assert (run / "model.safetensors").stat().st_mtime_ns == weights


def _untrained_d3rlpy(algo_id: str, obs_dim: int, n_actions: int) -> D3rlpyPolicy:
    """Two freshly initialised d3rlpy agents (seeded) of ``algo_id``, built with d3rlpy's own API."""
    import d3rlpy

    cls = {"d3rlpy-bc": d3rlpy.algos.DiscreteBCConfig, "d3rlpy-cql": d3rlpy.algos.DiscreteCQLConfig}[algo_id]
    algos = []
    for i in range(2):
        d3rlpy.seed(i)
        algo = cls(encoder_factory=d3rlpy.models.VectorEncoderFactory(hidden_units=[8])).create(device="cpu")
        algo.create_impl((obs_dim,), n_actions)
        algos.append(algo)
    return D3rlpyPolicy(algo_id, algos)


def test_d3rlpy_bc_samples_legal_actions_and_cql_does_not() -> None:
    (obs, mask), *_ = _observations(1)
    policy = _untrained_d3rlpy("d3rlpy-bc", obs.shape[1], mask.shape[1])
    mask = mask.copy()
    mask[0, :3] = False  # fewer legal actions for agent 0
    rng = np.random.default_rng(0)
    draws = np.stack([policy.act_sampled(obs, mask, rng) for _ in range(300)])  # [300, N]
    assert np.take_along_axis(np.broadcast_to(mask, (300, *mask.shape)), draws[..., None], axis=-1).all()
    assert len(set(draws[:, 1].tolist())) > 1  # it does sample
    rng = np.random.default_rng(0)
    assert np.array_equal(draws, np.stack([policy.act_sampled(obs, mask, rng) for _ in range(300)]))
    result = evaluate_policy(policy, ENV, {}, EvalConfig(episodes=2, act="sample"))
    assert result["act"] == "sample" and result["illegal_actions"] == 0

    cql = _untrained_d3rlpy("d3rlpy-cql", obs.shape[1], mask.shape[1])
    with pytest.raises(ValueError, match="greedily"):
        cql.act_sampled(obs, mask, np.random.default_rng(0))


def test_cli_evaluate_act_modes(bc_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(bc_run, tmp_path / "bc"))
    cli = [sys.executable, "-c", "from llmca_data.cli import main; main()", "evaluate"]
    proc = subprocess.run([*cli, str(run), "--episodes", "2", "--act", "sample"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{ENV} (sample):" in proc.stdout and "frozen " in proc.stdout and "/2 episodes" in proc.stdout
    assert json.loads((run / RUN_EVAL).read_text())["act"] == "sample"

    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "algo": "iql-cql"}))  # the same net, read as Q-values
    proc = subprocess.run([*cli, str(run), "--episodes", "2", "--act", "sample"], capture_output=True, text=True)
    assert proc.returncode == 2 and "use --act greedy" in proc.stderr and "Traceback" not in proc.stderr
