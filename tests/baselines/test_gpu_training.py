"""Training on the GPU: the dataset resident on CUDA, weights saved as CPU safetensors (skips without CUDA)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmca_data.baselines.iql_cql import IQLCQLConfig, train_iql_cql
from llmca_data.baselines.policy import RUN_CONFIG, load_policy
from llmca_data.baselines.qmix_cql import QMIXCQLConfig, train_qmix_cql
from llmca_data.baselines.training import load_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

ENV = "lbf-8x8-2p-2f"


def test_data_is_resident_on_the_gpu(lbf_dataset: Path) -> None:
    data, _ = load_data(lbf_dataset, ENV, None, "env", "cuda")
    assert all(v.device.type == "cuda" for v in data.values())


@pytest.mark.parametrize("algo", ["iql-cql", "qmix-cql"])
def test_cuda_run_reloads_on_cpu_and_acts_as_on_gpu(algo: str, lbf_dataset: Path, tmp_path: Path) -> None:
    common = {"steps": 50, "batch_size": 64, "hidden": (32,), "device": "cuda", "eval_episodes": 2}
    if algo == "iql-cql":
        run = train_iql_cql(lbf_dataset, ENV, None, tmp_path / "run", IQLCQLConfig(reward="env", **common))
    else:
        run = train_qmix_cql(lbf_dataset, ENV, None, tmp_path / "run", QMIXCQLConfig(**common))
    assert json.loads((run / RUN_CONFIG).read_text())["device"] == "cuda"
    gpu, cpu = load_policy(run, "cuda"), load_policy(run, "cpu")
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = rng.random((2, 12), dtype=np.float32)
        mask = rng.random((2, 6)) < 0.7
        mask[:, 0] = True
        np.testing.assert_array_equal(gpu.act(obs, mask), cpu.act(obs, mask))
