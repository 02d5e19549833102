"""d3rlpy independent learners: train a few steps, save without pickle, reload the same policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmca_data.baselines.d3rlpy_runner import (
    CONFIG_CLASSES,
    CONFIGS,
    D3rlpyBCConfig,
    D3rlpyBCQConfig,
    D3rlpyCQLConfig,
    D3rlpyPolicy,
    agent_tensors,
    fit_agents,
    make_d3rlpy_config,
    save_d3rlpy_run,
    train_d3rlpy,
)
from llmca_data.baselines.evaluate import EvalConfig, evaluate_run
from llmca_data.baselines.policy import RUN_CONFIG, RUN_EVAL, RUN_METRICS, RUN_WEIGHTS, RunError, load_policy
from llmca_data.loaders import OfflineDataset

ENV = "lbf-8x8-2p-2f"

torch.set_num_threads(1)


def _real_obs(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Observations [M, N, D] and masks [M, N, A] of the dataset's random-tier steps."""
    tr = OfflineDataset.open(root, ENV, ["random"]).transitions()
    return tr["obs"].numpy()[:200], tr["action_mask"].numpy()[:200]


@pytest.mark.parametrize("algo_id", sorted(CONFIG_CLASSES))
def test_train_save_load_roundtrip(
    algo_id: str,
    lbf_dataset_master: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    ds = OfflineDataset.open(lbf_dataset_master, ENV, ["expert"])
    calls: list[tuple[int, int]] = []
    config = CONFIGS[algo_id](steps=30, seed=1, batch_size=16, hidden=(32,), device="cpu")
    algos, rows = fit_agents(config, ds, progress=lambda s, t: calls.append((s, t)))
    assert len(algos) == 2 and [r["agent"] for r in rows] == [0, 1]
    assert calls == [(30, 60), (60, 60)]
    run = tmp_path / "run"
    save_d3rlpy_run(run, algo_id, algos, ds.spec, {"steps": 30})
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # d3rlpy's logs and gym's notice are swallowed
    assert not (tmp_path / "d3rlpy_logs").exists()
    assert sorted(p.name for p in run.iterdir()) == [RUN_CONFIG, RUN_WEIGHTS]
    config = json.loads((run / RUN_CONFIG).read_text())
    assert config["algo"] == algo_id and config["env_id"] == ENV and config["n_agents"] == 2
    assert config["d3rlpy_config"]["encoder_factory"]["params"]["hidden_units"] == [32]

    policy = load_policy(run)
    assert isinstance(policy, D3rlpyPolicy) and policy.algo == algo_id
    obs, masks = _real_obs(lbf_dataset_master)  # [M, 2, D], [M, 2, A]
    live = D3rlpyPolicy(algo_id, algos)
    everything = np.ones_like(masks[0])
    for i in range(2):  # unmasked: exactly d3rlpy's own greedy action
        want = algos[i].predict(np.ascontiguousarray(obs[:, i]))  # [M]
        got = np.array([policy.act(o, everything)[i] for o in obs])
        assert np.array_equal(got, want)
    for o, m in zip(obs, masks, strict=True):  # masked: same as the in-memory policy, and legal
        a = policy.act(o, m)
        assert a.dtype == np.int64 and a.shape == (2,)
        assert np.array_equal(a, live.act(o, m))
        assert m[np.arange(2), a].all()


def test_mask_forces_best_legal_action(
    lbf_dataset_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ds = OfflineDataset.open(lbf_dataset_master, ENV, ["expert"])
    algos, _ = fit_agents(D3rlpyCQLConfig(steps=10, batch_size=16, hidden=(16,), device="cpu"), ds)
    policy = D3rlpyPolicy("d3rlpy-cql", algos)
    obs = _real_obs(lbf_dataset_master)[0][0]  # [2, D]
    for i in range(2):
        q = policy.scores(i, obs[i : i + 1])[0].numpy()  # [A]
        mask = np.ones((2, q.size), np.bool_)
        mask[i, int(q.argmax())] = False
        q[int(q.argmax())] = -np.inf
        assert policy.act(obs, mask)[i] == int(q.argmax())


def test_train_d3rlpy_and_evaluate_run(
    lbf_dataset_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = D3rlpyBCQConfig(steps=20, batch_size=16, hidden=(32,), device="cpu")
    run = train_d3rlpy(lbf_dataset_master, ENV, ["expert"], tmp_path / "bcq", config)
    names = sorted(p.name for p in run.rglob("*"))
    assert names == [RUN_CONFIG, RUN_METRICS, RUN_WEIGHTS]
    assert not any(p.suffix in {".pkl", ".pickle", ".pt", ".d3"} for p in tmp_path.rglob("*"))
    assert not (tmp_path / "d3rlpy_logs").exists()
    rows = [json.loads(line) for line in (run / RUN_METRICS).read_text().splitlines()]
    assert [(r["agent"], r["step"]) for r in rows] == [(0, 20), (1, 20)] and "loss" in rows[0]
    config = json.loads((run / RUN_CONFIG).read_text())
    assert config["tiers"] == ["expert"] and config["reward"] == "team" and config["steps"] == 20
    result = evaluate_run(run, EvalConfig(episodes=2))
    assert json.loads((run / RUN_EVAL).read_text()) == result
    assert result["algo"] == "d3rlpy-bcq" and len(result["returns"]) == 2 and result["illegal_actions"] == 0


def test_bad_weights_are_refused(lbf_dataset_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file, save_file

    monkeypatch.chdir(tmp_path)
    run = train_d3rlpy(lbf_dataset_master, ENV, "expert", tmp_path / "bc", D3rlpyBCConfig(steps=5, hidden=(8,)))
    tensors = load_file(str(run / RUN_WEIGHTS))
    save_file({**tensors, "agent9.extra": torch.zeros(1)}, str(run / RUN_WEIGHTS))
    with pytest.raises(RunError, match="unexpected"):
        load_policy(run)
    save_file({k: v for k, v in tensors.items() if not k.startswith("agent1.")}, str(run / RUN_WEIGHTS))
    with pytest.raises(RunError, match="agent 1"):
        load_policy(run)


def test_bcq_falls_back_to_best_legal_q_and_is_seeded(
    lbf_dataset_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ds = OfflineDataset.open(lbf_dataset_master, ENV, ["expert"])
    config = D3rlpyBCQConfig(steps=10, seed=3, batch_size=16, hidden=(16,), device="cpu")
    algos, _ = fit_agents(config, ds)
    again, _ = fit_agents(config, ds)
    first, second = agent_tensors(algos), agent_tensors(again)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    policy = D3rlpyPolicy("d3rlpy-bcq", algos)
    obs = _real_obs(lbf_dataset_master)[0][0]  # [2, D]
    for algo in algos:
        algo.impl._action_flexibility = 0.999999  # only the imitator's favourite passes the filter
    for i in range(2):
        score = policy.scores(i, obs[i : i + 1])[0].numpy()  # [A]
        assert (score > 0).sum() == 1
        mask = np.ones((2, score.size), np.bool_)
        mask[i, int(score.argmax())] = False
        with torch.no_grad():
            q = algos[i].impl._q_func_forwarder.compute_expected_q(torch.tensor(obs[i : i + 1]))[0].numpy()
        q[int(score.argmax())] = -np.inf
        assert policy.act(obs, mask)[i] == int(q.argmax())


def test_our_settings_reach_d3rlpy() -> None:
    """Every setting of our config arrives in the d3rlpy config that builds the learners."""
    cql = make_d3rlpy_config(D3rlpyCQLConfig(lr=1e-3, batch_size=64, hidden=(48, 24), gamma=0.9, cql_alpha=0.25,
                                             target_period=150, reward_scale=10.0))  # fmt: skip
    assert (cql.learning_rate, cql.batch_size, cql.gamma, cql.alpha, cql.target_update_interval) == (
        1e-3, 64, 0.9, 0.25, 150)  # fmt: skip
    assert cql.encoder_factory.hidden_units == [48, 24] and cql.reward_scaler.multiplier == 10.0
    bcq = make_d3rlpy_config(D3rlpyBCQConfig(lr=2e-4, target_period=300, action_flexibility=0.5))
    assert (bcq.learning_rate, bcq.target_update_interval, bcq.action_flexibility) == (2e-4, 300, 0.5)
    assert bcq.reward_scaler is None  # scale 1: no scaler
    bc = make_d3rlpy_config(D3rlpyBCConfig(lr=5e-4, batch_size=32))
    assert (bc.learning_rate, bc.batch_size) == (5e-4, 32)
    # defaults match our own baselines', not d3rlpy's (6.25e-5 and a target copy every 8000 steps)
    ours = D3rlpyCQLConfig()
    from llmca_data.baselines.iql_cql import IQLCQLConfig

    theirs = IQLCQLConfig()
    assert (ours.lr, ours.batch_size, ours.hidden, ours.gamma, ours.cql_alpha, ours.target_period) == (
        theirs.lr, theirs.batch_size, theirs.hidden, theirs.gamma, theirs.cql_alpha, theirs.target_period)  # fmt: skip
