"""What an online run keeps on disk: resumable checkpoints and the dataset of its episodes.

Input: the learner's networks, optimizer, replay buffer and JSON-ready counters; the episodes
the run collected with their critic outputs. Output, inside the run directory::

    checkpoint.json                      {"dir": "checkpoints/ep-00000100", "episodes": 100} (the commit point)
    checkpoints/ep-00000100/nets.safetensors    online.* / target.* weights, rng.torch (+ rng.cuda.<i>)
    checkpoints/ep-00000100/optim.safetensors   the optimizer's per-parameter tensors; optim.json its scalars
    checkpoints/ep-00000100/buffer.npz          the replay buffer's filled slots
    checkpoints/ep-00000100/state.json          counters, timers, the numpy RNG state
    dataset/                             a dataset in the standard layout (tier ``replay``)

Nothing is pickled. A checkpoint is written to its own folder and becomes current only when
``checkpoint.json`` is replaced (atomically); older folders are then removed. The run's
dataset is committed through the dataset journal *before* the checkpoint, so after a kill it
may be ahead of the checkpoint, never behind: ``RunDataset.load_after`` gives those episodes
back (with their credits) so a resumed run reuses them instead of playing or annotating
them again, and no episode is ever stored twice.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from torch import nn

from llmca_data.annotation.annotate import annotation_rows
from llmca_data.annotation.critic import Critic, CriticOutput
from llmca_data.dataset import Dataset, DatasetWriter, EpisodeCredits, set_critic_columns
from llmca_data.envs.base import EnvSpec
from llmca_data.layout import ShardName
from llmca_data.rollout import Episode
from llmca_data.schema import credit_column, from_fsl, task_column
from llmca_data.shards import write_json_atomic
from llmca_data.tables import episodes_to_tables, tables_to_episodes

from .replay_buffer import ReplayBuffer

CHECKPOINT_POINTER = "checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
RUN_DATASET = "dataset"
TIER = "replay"


def save_checkpoint(
    run_dir: Path,
    episodes: int,
    nets: dict[str, nn.Module],
    optim: torch.optim.Optimizer,
    buffer: ReplayBuffer,
    state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint after ``episodes`` episodes and make it the current one."""
    from safetensors.torch import save_file

    rel = f"{CHECKPOINTS_DIR}/ep-{episodes:08d}"
    folder = run_dir / rel
    if folder.exists():  # a half-written folder of a killed run (never the current one)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tensors = {f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict().items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / "nets.safetensors"))
    optim_tensors, optim_json = _optimizer_to_safe(optim)
    save_file(optim_tensors, str(folder / "optim.safetensors"))
    (folder / "optim.json").write_text(json.dumps(optim_json))
    buffer.save(folder / "buffer.npz")
    (folder / "state.json").write_text(json.dumps({**state, "episodes": episodes}, sort_keys=True))
    for path in folder.iterdir():
        with path.open("rb+") as f:
            os.fsync(f.fileno())
    write_json_atomic(run_dir / CHECKPOINT_POINTER, {"dir": rel, "episodes": episodes})
    for old in (run_dir / CHECKPOINTS_DIR).iterdir():
        if old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(
    run_dir: Path, nets: dict[str, nn.Module], optim: torch.optim.Optimizer, buffer: ReplayBuffer
) -> dict[str, Any] | None:
    """Restore the current checkpoint into ``nets``/``optim``/``buffer`` and the torch RNG; its
    ``state.json`` (with ``episodes``), or None when the run has no checkpoint yet."""
    from safetensors.torch import load_file

    pointer = run_dir / CHECKPOINT_POINTER
    if not pointer.is_file():
        return None
    folder = run_dir / json.loads(pointer.read_text())["dir"]
    tensors = load_file(str(folder / "nets.safetensors"))
    device = next(next(iter(nets.values())).parameters()).device
    for name, net in nets.items():
        prefix = f"{name}."
        net.load_state_dict({k.removeprefix(prefix): v.to(device) for k, v in tensors.items() if k.startswith(prefix)})
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    _optimizer_from_safe(
        optim, load_file(str(folder / "optim.safetensors")), json.loads((folder / "optim.json").read_text())
    )
    buffer.load(folder / "buffer.npz")
    state: dict[str, Any] = json.loads((folder / "state.json").read_text())
    return state


def _optimizer_to_safe(optim: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict split into named tensors and JSON scalars."""
    sd = optim.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_safe(optim: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], body: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {int(pid): dict(values) for pid, values in body["scalars"].items()}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    optim.load_state_dict({"state": state, "param_groups": body["param_groups"]})


class RunDataset:
    """The run's episodes in the standard layout: tier ``replay``, the critic's credit column (NaN
    where it failed), ``task_llm_taca`` for LLM-TACA, and one annotations row per episode.

    ``writer`` comes from ``llmca_data.dataset.writing``, whose lock the caller holds while using this object.
    """

    def __init__(
        self, writer: DatasetWriter, spec: EnvSpec, critic: Critic | None, policy_id: str, description: str
    ) -> None:
        self.writer, self.root, self.spec, self.critic = writer, writer.root, spec, critic
        self.policy_id, self.description = policy_id, description

    def committed_ids(self) -> np.ndarray:
        """Episode ids already in the dataset, int64 [E]."""
        return Dataset(self.root).episode_ids(self.spec.env_id, TIER)

    def commit(self, episodes: list[Episode], outputs: list[CriticOutput | None]) -> list[str]:
        """Add ``episodes`` (their ``episode_id`` set) as one new shard of each kind; ids already
        stored are skipped. Returns the files written."""
        ds = self.writer
        stored = set(ds.episode_ids(self.spec.env_id, TIER).tolist())
        keep = [k for k, e in enumerate(episodes) if e.episode_id not in stored]
        if not keep:
            return []
        episodes, outputs = [episodes[k] for k in keep], [outputs[k] for k in keep]
        steps, eps = episodes_to_tables(episodes, [e.episode_id for e in episodes], self.spec)
        rows = None
        if self.critic is not None:
            done = [(e, o) for e, o in zip(episodes, outputs, strict=True) if o is not None]
            results = [EpisodeCredits(e.episode_id, o.credits, o.tasks) for e, o in done]
            steps = set_critic_columns(steps, self.critic.critic_id, self.spec.n_agents, results)
            rows = annotation_rows(self.critic, [e for e, _ in done], [o for _, o in done], self.spec)
        files = ds.append_episodes(self.spec, TIER, steps, eps, annotations=rows)
        ds.record_collection(self.spec, TIER, [self.policy_id], description=self.description)
        if self.critic is not None:
            ds.record_critic(self.critic.critic_id, self.critic.params())
        ds.commit()
        return files

    def load_after(self, first_id: int) -> list[tuple[Episode, CriticOutput | None]]:
        """Stored episodes with id >= ``first_id`` in id order, each with its stored credits and tasks."""
        ds = Dataset(self.root)
        if not ds.manifest.files or self.spec.env_id not in ds.info().get("envs", {}):
            return []
        out: list[tuple[Episode, CriticOutput | None]] = []
        n = self.spec.n_agents
        for name in ds.shards(self.spec.env_id, "steps", TIER):
            steps = ds.read(name)
            steps = steps.filter(pc.greater_equal(steps.column("episode_id"), first_id))
            if steps.num_rows == 0:
                continue
            eps = ds.read(ShardName(name.env_id, "episodes", name.tier, name.index))
            eps = eps.filter(pc.greater_equal(eps.column("episode_id"), first_id)).sort_by("episode_id")
            episodes = tables_to_episodes(steps, eps, self.spec)
            column = None if self.critic is None else credit_column(self.critic.critic_id)
            credits = from_fsl(steps.column(column), (n,)) if column in steps.column_names else None  # [M, N]
            tcol = None if self.critic is None else task_column(self.critic.critic_id)
            tasks = from_fsl(steps.column(tcol), (n,)).astype(np.int16) if tcol in steps.column_names else None
            lo = 0
            for episode in episodes:
                hi = lo + episode.length
                output = None
                if credits is not None:
                    c = credits[lo:hi]
                    output = CriticOutput(c, status="failed" if np.isnan(c).any() else "ok",
                                          tasks=None if tasks is None else tasks[lo:hi])  # fmt: skip
                out.append((episode, output))
                lo = hi
        return sorted(out, key=lambda p: p[0].episode_id)
