"""Training views of a built dataset: polars frames, torch tensors and d3rlpy datasets.

Input: a dataset directory, or a Hub repo id such as ``llmca/annotated`` (used when no such
path exists: downloaded with ``llmca_data.download.download`` into ``$LLMCA_CACHE_DIR/hub`` or the
user cache, pinned to ``revision``), one env id and some of its tiers. Output: polars frames
of the committed shards, dicts of torch tensors (transitions ``[M, N, ...]`` or fixed-length
sequences ``[B, T, N, ...]``) and per-agent d3rlpy ``MDPDataset``s (independent learners).
Only files in ``meta/manifest.json`` are read (a writer's unfinished files stay invisible);
tensors are built from Arrow buffers with numpy, page checksums verified while decoding.

Dataset tree (DESIGN.md §6, ``llmca_data.layout``)::

    README.md                                       dataset card; YAML ``configs:`` for ``datasets``
    meta/info.json                                  schema_version, envs (spec, kwargs), tiers, critics
    meta/manifest.json                              every committed data file (written last)
    data/<env_id>/steps/<tier>-00000.parquet        one row per (episode, t), sorted
    data/<env_id>/episodes/<tier>-00000.parquet     one row per episode (final_obs, returns, ...)
    data/<env_id>/annotations/<tier>-00000.parquet  one row per (episode, critic), rationales

Example::

    import polars as pl
    from llmca_data.loaders import OfflineDataset, sample_batch

    ds = OfflineDataset.open("llmca/annotated", "lbf-8x8-2p-2f", tiers=["expert"])
    ds.critics                                        # e.g. ('llm-mca', 'shapley')
    data = ds.transitions(reward="credit_llm_mca", device="cuda")   # resident on the GPU
    scaled = ds.transitions(reward="credit_llm_mca", credit_scale="episode")  # episode sums = returns
    batch = sample_batch(data, 256)                   # index_select with torch.randint indices
    obs, action, reward = batch["obs"], batch["action"], batch["reward"]  # [256, N, obs_dim], ...
    seqs = ds.sequences(20, reward="team")            # [B, 20, N, ...] plus mask [B, 20]
    mdp = ds.to_d3rlpy(agent=0, reward="env")         # d3rlpy.dataset.MDPDataset
    late = ds.steps(["episode_id", "t", "reward_team"], lazy=True).filter(pl.col("t") > 40).collect()
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from llmca_data.dataset import Dataset
from llmca_data.envs import make_env
from llmca_data.envs.base import EnvSpec, MultiAgentEnv
from llmca_data.errors import (
    LlmcaError,
    MissingExtraError,
    ShardError,
    UnknownCriticError,
    UnknownEnvError,
    UnknownTierError,
)
from llmca_data.extras import require
from llmca_data.info import load_info, spec_from_info
from llmca_data.layout import is_repo_id
from llmca_data.schema import TASK, credit_column, critic_column_kind, task_column
from llmca_data.shards import read_shard, regular_file

from .arrays import ShardRef, check_credit_scale, check_team_reward, delay_to_episode_end, read_columns, rescale_credits

if TYPE_CHECKING:
    import torch
    from d3rlpy.dataset import MDPDataset

log = logging.getLogger(__name__)

_FINALS = frozenset({"episode_id", "final_obs", "final_state", "final_action_mask"})


class LoaderError(LlmcaError, ValueError):
    """A request the dataset cannot answer (bad path, agent index, sequence length, column)."""


def resolve_root(path_or_repo_id: str | os.PathLike[str], revision: str | None = None) -> Path:
    """A dataset directory: the path itself, or a Hub repo downloaded into the local cache."""
    path = Path(path_or_repo_id).expanduser()
    if path.exists():
        if revision is not None:
            log.warning("revision %s ignored: %s is a local directory", revision, path)
        return path
    text = str(path_or_repo_id)
    if not is_repo_id(text):
        raise LoaderError(f"no dataset at {text}: give a dataset directory or a Hub repo id such as llmca/annotated")
    try:
        hub = importlib.import_module("llmca_data.download")
    except ImportError as exc:
        raise MissingExtraError(
            f"{text} is not a local directory, and downloading Hub repos needs llmca_data.download, which cannot be "
            f'imported ({exc}); install `pip install "llmca-data[hub]"` or pass a dataset directory'
        ) from exc
    base = Path(os.environ["LLMCA_CACHE_DIR"]) if os.environ.get("LLMCA_CACHE_DIR") else _user_cache()
    dest = base / "hub" / text.replace("/", "--") / (revision or "main")
    result = hub.download(text, dest, **({"revision": revision} if revision else {}))  # verifies sha256
    return Path(getattr(result, "path", dest))


def _user_cache() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llmca-data"))


class OfflineDataset:
    """One env's committed steps (some tiers) of a dataset, viewed as frames, tensors or d3rlpy data.

    Build it with ``OfflineDataset.open``. ``last_dropped_episodes`` counts the episodes the
    last ``transitions``/``sequences``/``to_d3rlpy`` call dropped because the requested
    credits were NaN (failed or missing annotation).
    """

    def __init__(
        self,
        root: Path,
        spec: EnvSpec,
        tiers: tuple[str, ...],
        steps: list[ShardRef],
        episodes: list[ShardRef],
        critic_ids: dict[str, str],
    ) -> None:
        self.root = root
        self.spec = spec
        self.tiers = tiers
        self._steps = steps
        self._episodes = episodes
        self._critic_ids = critic_ids  # credit column -> critic id
        self.last_dropped_episodes = 0

    @classmethod
    def open(
        cls,
        path_or_repo_id: str | os.PathLike[str],
        env_id: str,
        tiers: str | Sequence[str] | None = None,
        revision: str | None = None,
    ) -> OfflineDataset:
        """Open ``env_id`` (all its tiers, or ``tiers``) of a dataset directory or Hub repo.

        Raises:
            SchemaVersionError: the dataset was written by an incompatible llmca-data (the message
                names the version to install).
            UnknownEnvError / UnknownTierError: the message lists the envs / tiers present.
            ShardError: a committed shard is missing or unreadable.
        """
        root = resolve_root(path_or_repo_id, revision)
        info = load_info(root)
        envs = sorted(info.get("envs", {}))
        if env_id not in envs:
            present = ", ".join(envs) or "none (is this a dataset directory?)"
            raise UnknownEnvError(f"{root} has no env {env_id!r}; envs present: {present}")
        ds = Dataset(root)
        manifest = ds.manifest
        present_tiers = sorted({n.tier for n in manifest.shards(env_id, "steps")})
        wanted = present_tiers if tiers is None else list(dict.fromkeys([tiers] if isinstance(tiers, str) else tiers))
        unknown = [t for t in wanted if t not in present_tiers]
        if unknown or not wanted:
            raise UnknownTierError(
                f"{root} has no committed {env_id} steps for tier(s) {', '.join(unknown) or '(none given)'}; "
                f"tiers present for {env_id}: {', '.join(present_tiers) or 'none'}"
            )
        steps = []
        for tier in wanted:
            for name in manifest.shards(env_id, "steps", tier):
                columns = frozenset(ds.schema(name).names)
                steps.append(ShardRef(root / str(name), tier, manifest.files[str(name)].rows, columns))
        episodes = [
            ShardRef(root / str(n), t, manifest.files[str(n)].rows, _FINALS)
            for t in wanted
            for n in manifest.shards(env_id, "episodes", t)
        ]
        critic_ids = ds.critics(env_id, wanted)
        return cls(root, spec_from_info(info["envs"][env_id]), tuple(wanted), steps, episodes, critic_ids)

    @property
    def env_id(self) -> str:
        return self.spec.env_id

    @property
    def critics(self) -> tuple[str, ...]:
        """Ids of the critics whose ``credit_<critic>`` column is in the selected steps shards."""
        return tuple(sorted(self._critic_ids.values()))

    @property
    def task_columns(self) -> tuple[str, ...]:
        """The ``task_<critic>`` columns (LLM-TACA task assignments) in the selected steps shards."""
        return tuple(sorted({c for s in self._steps for c in s.columns if critic_column_kind(c) is TASK}))

    @property
    def rewards(self) -> tuple[str, ...]:
        """Every accepted ``reward=`` value: ``team``, ``env`` and one ``credit_<critic>`` per critic."""
        return ("team", "env", *self._critic_ids)

    def make_env(self) -> MultiAgentEnv:
        """A fresh environment built exactly as the dataset's (same id and kwargs)."""
        return make_env(self.env_id, **self.spec.kwargs)

    def episodes(self) -> pl.DataFrame:
        """The episodes table of the selected tiers (page checksums verified)."""
        frame = pl.from_arrow(pa.concat_tables([read_shard(e.path) for e in self._episodes]))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def steps(self, columns: Sequence[str] | None = None, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
        """A polars scan over the committed steps shards of the selected tiers.

        Nothing is read before ``collect()`` when ``lazy``; per-agent columns are ``pl.Array``
        (``.to_numpy()`` gives ``[M, N, ...]``). A credit column absent from some shards (a tier not
        annotated by that critic) is null there.
        """
        scan = pl.concat([pl.scan_parquet(regular_file(s.path)) for s in self._steps], how="diagonal_relaxed")
        if columns is not None:
            names = {c for s in self._steps for c in s.columns}
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise LoaderError(f"no steps column {', '.join(unknown)}; columns: {', '.join(sorted(names))}")
            scan = scan.select(list(columns))
        return scan if lazy else scan.collect()

    def transitions(
        self,
        reward: str = "team",
        device: str = "cpu",
        credit_scale: str = "none",
        tasks: str | None = None,
        team_reward: str = "true",
    ) -> dict[str, torch.Tensor]:
        """All selected steps as transition tensors (rows in shard order: tier, then episode, then t).

        Args:
            reward: ``team`` (``reward_team`` given to every agent), ``env`` (per-agent env reward) or
                ``credit_<critic>`` (that critic's credits; a bare critic id works too). Episodes
                with any NaN credit are dropped whole (count in ``last_dropped_episodes``).
            device: torch device for every tensor (``cuda`` keeps the dataset resident on the GPU).
            credit_scale: ``none`` (rewards as stored), ``step`` (each step's agents sum to
                ``reward_team``; a step whose rewards sum to ~0, below 1e-6, gets ``reward_team / N``
                for every agent, and an unrewarded step gets 0: temporal credit is lost) or
                ``episode`` (each episode's rewards are scaled by one factor so that they sum to its
                return Σ_t ``reward_team``, keeping which steps got credit; ~0-sum: return / (T·N)
                everywhere). A negative credit total under a positive reward flips signs in both.
                With ``team`` both give the uniform split; ``env`` rewards already sum to
                ``reward_team``. See ``llmca_data.loaders.arrays.rescale_credits``.
            tasks: a task critic (``llm-taca`` or its column ``task_llm_taca``) whose assignments
                to add as ``task``/``next_task`` [M, N] int64 (−1 where the critic assigned none).
            team_reward: ``true``, or ``delayed``: the team reward as one sum at each episode's
                last step (``team`` gives every agent that; ``env`` each agent's episode total
                there). Credits must then come from a critic that saw only that reward (an id
                ending in ``-delayed``: ``shapley-delayed``, ``llm-mca-shares-delayed``, ...).

        Returns:
            ``obs``/``next_obs`` [M, N, obs_dim] f32, ``action`` [M, N] i64, ``reward`` [M, N] f32,
            ``action_mask``/``next_action_mask`` [M, N, A] bool, ``state``/``next_state`` [M, S] f32,
            ``terminated``/``truncated`` [M] bool, ``cost`` [M, N] f32, ``episode_id`` [M] i64 and
            ``t`` [M] i64. The ``next_*`` of an episode's last step are its ``final_*`` columns.

        Raises:
            ConfigError: an unknown ``credit_scale`` or ``team_reward`` (before any data is read).
            LoaderError: ``team_reward="delayed"`` with credits of a critic that saw every step's reward.
        """
        th = require("torch")
        arrays = self._arrays(reward, credit_scale, tasks, team_reward)
        return {k: th.from_numpy(v).to(device) for k, v in arrays.items()}

    def sequences(
        self,
        length: int,
        reward: str = "team",
        device: str = "cpu",
        credit_scale: str = "none",
        tasks: str | None = None,
        team_reward: str = "true",
    ) -> dict[str, torch.Tensor]:
        """Episodes cut into chunks of ``length`` steps, padded to ``[B, T=length, ...]``.

        Same keys as ``transitions`` plus ``mask`` [B, T] (True on real steps). An episode of L
        steps gives ceil(L / length) chunks, in order; padding is zero / False everywhere.
        """
        if length < 1:
            raise LoaderError(f"sequence length must be >= 1, got {length}")
        th = require("torch")
        tr = self.transitions(reward, device, credit_scale, tasks, team_reward)
        ep = tr["episode_id"]  # [M]
        m = ep.shape[0]
        is_start = th.ones(m, dtype=th.bool, device=device)
        is_start[1:] = ep[1:] != ep[:-1]
        starts = is_start.nonzero().squeeze(1)  # [E]
        seg = th.cumsum(is_start.long(), 0) - 1  # [M] episode index of each step
        pos = th.arange(m, device=device) - starts[seg]  # [M] t within the episode
        lengths = th.diff(starts, append=th.tensor([m], device=device))  # [E]
        n_chunks = (lengths + length - 1) // length  # [E]
        first = th.cumsum(n_chunks, 0) - n_chunks  # [E]
        b, tau = first[seg] + pos // length, pos % length  # [M], [M]
        n_seq = int(n_chunks.sum())
        out: dict[str, torch.Tensor] = {}
        for key, value in tr.items():
            buf = th.zeros((n_seq, length, *value.shape[1:]), dtype=value.dtype, device=device)
            buf[b, tau] = value
            out[key] = buf
        mask = th.zeros((n_seq, length), dtype=th.bool, device=device)
        mask[b, tau] = True
        out["mask"] = mask
        return out

    def to_d3rlpy(
        self, agent: int, reward: str = "team", credit_scale: str = "none", team_reward: str = "true"
    ) -> MDPDataset:
        """One agent's view as a d3rlpy ``MDPDataset`` (independent learners).

        ``terminals`` = ``terminated`` and ``timeouts`` = ``truncated``. d3rlpy's limits: it has no
        next observation for a timed-out episode's last step, so that transition is dropped (an
        episode of L steps gives L - 1 transitions, a terminated one L); it knows no action masks
        (``action_mask`` is not passed: restrict actions yourself) and no other agents.
        ``credit_scale`` and ``team_reward`` as in ``transitions`` (applied to whole episodes before the drop).
        """
        if not 0 <= agent < self.spec.n_agents:
            raise LoaderError(f"agent {agent} out of range: {self.env_id} has agents 0..{self.spec.n_agents - 1}")
        with contextlib.redirect_stderr(io.StringIO()):  # legacy gym prints a notice on import
            d3rlpy = require("d3rlpy")
        arr = self._arrays(reward, credit_scale, team_reward=team_reward)
        terminals, timeouts = arr["terminated"], arr["truncated"]
        if np.any(terminals & timeouts):
            raise ShardError(f"{self.root}: steps both terminated and truncated; run `llmca validate`")
        with contextlib.redirect_stdout(io.StringIO()):  # d3rlpy logs its inferred signatures to stdout
            return d3rlpy.dataset.MDPDataset(
                observations=np.ascontiguousarray(arr["obs"][:, agent]),  # [M, obs_dim]
                actions=np.ascontiguousarray(arr["action"][:, agent]),  # [M]
                rewards=np.ascontiguousarray(arr["reward"][:, agent]),  # [M]
                terminals=terminals.astype(np.float32),
                timeouts=timeouts.astype(np.float32),
                action_space=d3rlpy.ActionSpace.DISCRETE,
                action_size=self.spec.n_actions,
            )

    def _reward_column(self, reward: str) -> str:
        if reward == "team":
            return "reward_team"
        if reward == "env":
            return "reward_env"
        for name in (reward, credit_column(reward)):
            if name in self._critic_ids:
                return name
        raise UnknownCriticError(
            f"unknown reward {reward!r} for {self.env_id} ({', '.join(self.tiers)}); "
            f"available: {', '.join(self.rewards)}"
        )

    def _task_column(self, tasks: str) -> str:
        name = tasks if critic_column_kind(tasks) is TASK else task_column(tasks)
        if name not in self.task_columns:
            present = ", ".join(self.task_columns) or "none (annotate with `llmca annotate --critic llm-taca`)"
            raise UnknownCriticError(
                f"no task column {name!r} for {self.env_id} ({', '.join(self.tiers)}); present: {present}"
            )
        return name

    def _arrays(
        self, reward: str, credit_scale: str, tasks: str | None = None, team_reward: str = "true"
    ) -> dict[str, np.ndarray]:
        """The numpy arrays behind ``transitions`` (see there)."""
        check_credit_scale(credit_scale)
        delayed = check_team_reward(team_reward) == "delayed"
        n, d, a, s = self.spec.n_agents, self.spec.obs_dim, self.spec.n_actions, self.spec.state_dim
        column = self._reward_column(reward)
        if delayed and column.startswith("credit_") and not column.endswith("_delayed"):
            raise LoaderError(
                f"{column} was computed from every step's team reward, so it does not belong to the delayed "
                f"setting: train on team, env or a critic that saw the delayed reward (annotate with "
                f"shapley-delayed or counterfactual-delayed, or an LLM critic with --team-reward delayed)"
            )
        task_column = None if tasks is None else self._task_column(tasks)
        layout: dict[str, tuple[tuple[int, ...], type]] = {
            "episode_id": ((), np.int64),
            "t": ((), np.int64),
            "obs": ((n, d), np.float32),
            "state": ((s,), np.float32),
            "action": ((n,), np.int64),
            "action_mask": ((n, a), np.bool_),
            "reward_team": ((), np.float32),
            "cost": ((n,), np.float32),
            "terminated": ((), np.bool_),
            "truncated": ((), np.bool_),
        }
        if column != "reward_team":
            layout[column] = ((n,), np.float32)
        if task_column is not None:
            layout[task_column] = ((n,), np.int64)
        cols = read_columns(self._steps, layout)
        ep = cols["episode_id"]  # [M]
        ends = np.ones(ep.shape[0], np.bool_)
        ends[:-1] = ep[1:] != ep[:-1]
        if not np.array_equal(ends, cols["terminated"] | cols["truncated"]):
            raise ShardError(
                f"{self.root}: {self.env_id} steps are not contiguous episodes each ending in one terminated or "
                "truncated step; run `llmca validate`"
            )
        self.last_dropped_episodes = 0
        if column.startswith("credit_"):
            bad = np.unique(ep[np.isnan(cols[column]).any(axis=1)])
            if bad.size:
                keep = ~np.isin(ep, bad)
                cols = {k: v[keep] for k, v in cols.items()}
                ep, ends = cols["episode_id"], ends[keep]
                self.last_dropped_episodes = int(bad.size)
                log.warning(
                    "dropped %d episodes of %s whose %s has NaN (failed annotation)", bad.size, self.env_id, column
                )
        team = cols.pop("reward_team")  # [M]
        rew = np.repeat(team[:, None], n, axis=1) if column == "reward_team" else cols.pop(column)  # [M, N]
        episode: np.ndarray = np.cumsum(ends) - ends  # [M] index of each step's episode (contiguous runs, tiers apart)
        if delayed:
            team = delay_to_episode_end(team[:, None], episode)[:, 0]  # [M]
            if not column.startswith("credit_"):  # team, env: sums at the end; delayed critics saw this already
                rew = delay_to_episode_end(rew, episode)  # [M, N]
        cols["reward"] = rescale_credits(rew, team, episode, credit_scale)  # [M, N]
        if task_column is not None:
            cols["task"] = task = cols.pop(task_column)  # [M, N]
            cols["next_task"] = np.concatenate([task[1:], task[-1:]])  # an episode's last step keeps its task
            cols["next_task"][ends] = task[ends]
        final = self._finals(ep[ends], n, d, a, s)
        for key in ("obs", "state", "action_mask"):
            nxt = np.empty_like(cols[key])
            nxt[:-1] = cols[key][1:]
            nxt[ends] = final[key]
            cols["next_" + key] = nxt
        return cols

    def _finals(self, ids: np.ndarray, n: int, d: int, a: int, s: int) -> dict[str, np.ndarray]:
        """``final_obs`` / ``final_state`` / ``final_action_mask`` of episodes ``ids`` (in that order)."""
        layout: dict[str, tuple[tuple[int, ...], type]] = {
            "episode_id": ((), np.int64),
            "final_obs": ((n, d), np.float32),
            "final_state": ((s,), np.float32),
            "final_action_mask": ((n, a), np.bool_),
        }
        table = read_columns(self._episodes, layout)
        order = np.argsort(table["episode_id"], kind="stable")
        at = order[np.minimum(np.searchsorted(table["episode_id"], ids, sorter=order), order.size - 1)]
        if ids.size and (order.size == 0 or not np.array_equal(table["episode_id"][at], ids)):
            raise ShardError(f"{self.root}: steps of {self.env_id} episodes missing from the episodes table")
        return {k.removeprefix("final_"): table[k][at] for k in ("final_obs", "final_state", "final_action_mask")}
