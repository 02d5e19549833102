"""Score any critic on the critic benchmark (``llmca critic-bench``): agreement with the references.

Input: a ``Bench`` (``bench_set``: the fixed episode set with the reference credits), a critic
name — a registry id (``critic_ids()``: reference, LLM and plugin critics), a bench baseline
(``evidence-split``, ``random-share``, see ``bench_critics``) or credits imported from a
Parquet file keyed by (``episode_id``, ``t``) (``annotation.imported``) — and a ``BenchRun``.
Output: a results document (``score_bench``; ``write_results`` saves it as JSON) with, per
setting, one row per env and one overall row (``env_id == "all"``), each with, against every
reference: Spearman, sign agreement, top-agent accuracy, scaled MAE, per-agent
episode-total Pearson and step Pearson (``annotation.metrics``, over the pooled steps), plus validity, tokens,
critic seconds and dollars.

Settings:

- ``plain``: the critic sees the true team reward.
- ``delayed``: the team reward only at the episode's last step (all of it there, 0 elsewhere).
  LLM critics (registry kind ``llm``) are built with ``LLMConfig(team_reward="delayed")``, so
  their prompts show the delayed reward (their id gains ``-delayed``, e.g. ``llm-mca-delayed``);
  critics that do not need the env (``needs_env`` False: ``uniform``, ``env``, the bench
  baselines, imported credits) get ``delayed_view(episode)``, whose ``reward_env`` is each
  agent's episode total at the last step. Re-simulating critics (``shapley``,
  ``counterfactual*``, plugins with ``needs_env``) replay the true episode and cannot be
  blinded: their rows say ``oracle: true`` in both settings (they query the simulator, which a
  critic reading the log cannot).

References are always the bench set's credits, computed on the true episode, and a step is
*rewarded* by its true ``reward_team``, in both settings. Validity is the share of episodes
whose status is ``ok`` or ``repaired``; a failed episode is invalid and never scored (its
steps are left out of every agreement metric). Seconds are the critic's wall time; dollars
are reported (else None) only when the LLM critic has prices. ``limit`` > 0 scores the first
``limit`` episodes of each env, taking the tiers in turn (expert, medium, expert, ...) in
episode-id order, so a small run still covers every tier.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmca_data import __version__
from llmca_data.config import ConfigError
from llmca_data.envs import make_env
from llmca_data.envs.base import MultiAgentEnv
from llmca_data.rollout import Episode
from llmca_data.shards import write_json_atomic

from .bench_critics import BENCH_BASELINES, bench_baseline, delayed_view, evidence_of
from .bench_set import BENCH_VERSION, Bench
from .critic import Critic, CriticOutput, run_critic
from .imported import ImportedCritic
from .metrics import CreditTally, combine_tallies, tally_credits
from .registry import CriticOptions, resolve

SETTINGS = ("plain", "delayed")
RESULTS_FORMAT = "llmca-critic-bench-results"
RESULTS_VERSION = 1
ALL = "all"
"""``env_id`` of the overall row."""
VALID = ("ok", "repaired")
CHUNK = 16
"""Episodes per critic call (the progress step)."""

Progress = Callable[[int, int, str], None]
"""``progress(episodes_done, episodes_total, status)``."""


@dataclass(frozen=True)
class BenchRun:
    """One benchmark run (saved in the results)."""

    critic: str
    """Registry id, bench baseline, or the id of imported credits."""
    settings: tuple[str, ...] = SETTINGS
    limit: int = 0
    """Episodes per env (0: all)."""
    options: CriticOptions = field(default_factory=CriticOptions)
    """Options of registry critics (the LLM endpoint, model, prices are in ``options.llm``)."""
    credits_file: Path | None = None
    """Imported credits (``episode_id``, ``t``, ``credit``): score them under the id ``critic``."""

    def __post_init__(self) -> None:
        if not self.settings or any(s not in SETTINGS for s in self.settings):
            raise ConfigError(f"settings must be among {', '.join(SETTINGS)}, got {list(self.settings)}")
        if self.limit < 0:
            raise ConfigError(f"limit must be >= 0, got {self.limit}")
        if self.credits_file is not None and len(self.settings) != 1:
            raise ConfigError("imported credits were computed for one setting: give --setting plain or delayed")


@dataclass(frozen=True)
class _Built:
    critic: Critic
    mode: str
    """``llm`` (true episode + env, blinded by its config), ``resim`` (true episode + env, oracle),
    ``view`` (no env; the delayed view in ``delayed``)."""


def _build(run: BenchRun, setting: str, evidence: dict[int, Any] | None) -> _Built:
    """The critic of ``run`` as it runs in ``setting``."""
    if run.credits_file is not None:
        return _Built(ImportedCritic(run.critic, run.credits_file), "view")
    if run.critic in BENCH_BASELINES:
        return _Built(bench_baseline(run.critic, evidence, seed=run.options.seed), "view")
    entry, _ = resolve(run.critic, run.options)
    if entry.kind == "llm":
        team_reward = "true" if setting == "plain" else "delayed"
        options = replace(run.options, llm=replace(run.options.llm, team_reward=team_reward))
        return _Built(entry.build(entry.critic_id, resolve(run.critic, options)[1]), "llm")
    critic = entry.build(entry.critic_id, resolve(run.critic, run.options)[1])
    return _Built(critic, "resim" if critic.needs_env else "view")


def limited(episodes: list[Episode], limit: int) -> list[Episode]:
    """The first ``limit`` episodes (0: all), tiers taken in turn, each in episode-id order."""
    if limit <= 0 or limit >= len(episodes):
        return episodes
    tiers = list(dict.fromkeys(e.tier for e in episodes))
    rank: dict[int, int] = {}
    for tier in tiers:
        for k, e in enumerate(x for x in episodes if x.tier == tier):
            rank[e.episode_id] = k
    order = sorted(episodes, key=lambda e: (rank[e.episode_id], tiers.index(e.tier)))
    return sorted(order[:limit], key=lambda e: e.episode_id)


def _run(built: _Built, setting: str, episodes: list[Episode], env: MultiAgentEnv,
         tick: Callable[[int], None]) -> tuple[list[CriticOutput], float]:  # fmt: skip
    """Outputs of the critic on ``episodes`` (as it sees them in ``setting``) and its wall seconds."""
    seen = [delayed_view(e) for e in episodes] if built.mode == "view" and setting == "delayed" else episodes
    live = env if built.mode in ("llm", "resim") else None
    outputs: list[CriticOutput] = []
    seconds = 0.0
    for k in range(0, len(seen), CHUNK):
        started = time.perf_counter()
        outputs += run_critic(built.critic, seen[k : k + CHUNK], live)
        seconds += time.perf_counter() - started
        tick(len(seen[k : k + CHUNK]))
    return outputs, seconds


def _row(env_id: str, usage: dict[str, Any], tallies: dict[str, CreditTally]) -> dict[str, Any]:
    episodes, valid = usage["episodes"], usage["valid_episodes"]
    return {
        "env_id": env_id,
        **usage,
        "validity": valid / episodes if episodes else None,
        "scores": {ref: tally.scores().to_dict() for ref, tally in tallies.items()},
    }


def _score_env(bench: Bench, outputs: list[CriticOutput], episodes: list[Episode], steps: Any,
               n_agents: int) -> dict[str, CreditTally]:  # fmt: skip
    """Tallies of the valid episodes' credits against each reference (true team reward)."""
    valid = [(e, o) for e, o in zip(episodes, outputs, strict=True) if o.status in VALID]
    ids = steps.column("episode_id").to_numpy()  # [M]
    keep = np.isin(ids, [e.episode_id for e, _ in valid])  # [M]
    empty = np.zeros((0, n_agents), np.float32)
    critic = np.concatenate([o.credits for _, o in valid]) if valid else empty  # [K, N]
    reward = steps.column("reward_team").to_numpy()[keep]  # [K]
    return {
        ref: tally_credits(critic, bench.reference(steps, ref, n_agents)[keep], reward, ids[keep])
        for ref in bench.config.references
    }


def score_bench(bench: Bench, run: BenchRun, progress: Progress | None = None) -> dict[str, Any]:
    """Run ``run``'s critic on the bench set in each of its settings and score it (module docstring).

    Raises:
        UnknownCriticError: ``run.critic`` is neither a registry id nor a bench baseline.
        CreditFileError: an unreadable imported credits file.
        ConfigError: bad options.
    """
    loaded = {env_id: bench.load(env_id) for env_id in bench.env_ids}
    episodes = {env_id: limited(eps, run.limit) for env_id, (eps, _) in loaded.items()}
    envs = {env_id: make_env(env_id, **bench.spec(env_id).kwargs) for env_id in bench.env_ids}
    total = sum(len(e) for e in episodes.values()) * len(run.settings)
    done = 0

    def tick(status: str) -> Callable[[int], None]:
        def advance(k: int) -> None:
            nonlocal done
            done += k
            if progress:
                progress(done, total, status)

        return advance

    evidence: dict[int, Any] | None = None
    if run.critic == "evidence-split" and run.credits_file is None:
        evidence = {k: v for env_id, eps in episodes.items() for k, v in evidence_of(eps, envs[env_id]).items()}
    priced = run.options.llm.transport.price_in > 0 or run.options.llm.transport.price_out > 0
    settings: list[dict[str, Any]] = []
    model = base_url = ""
    for setting in run.settings:
        built = _build(run, setting, evidence)
        params = built.critic.params()
        if built.mode == "llm":
            model, base_url = str(params.get("model", "")), str(params.get("base_url", ""))
        rows, all_tallies, all_usage = [], [], []
        try:
            for env_id, eps in episodes.items():
                outputs, seconds = _run(built, setting, eps, envs[env_id], tick(f"{built.critic.critic_id} {env_id}"))
                spec = bench.spec(env_id)
                tallies = _score_env(bench, outputs, eps, loaded[env_id][1], spec.n_agents)
                usage = {
                    "episodes": len(eps),
                    "valid_episodes": sum(o.status in VALID for o in outputs),
                    "steps": sum(e.length for e in eps),
                    "tokens_in": sum(o.tokens_in for o in outputs),
                    "tokens_out": sum(o.tokens_out for o in outputs),
                    "seconds": seconds,
                    "cost_usd": float(sum(o.cost_usd for o in outputs)) if priced and built.mode == "llm" else None,
                }
                rows.append(_row(env_id, usage, tallies))
                all_tallies.append(tallies)
                all_usage.append(usage)
        finally:
            close = getattr(built.critic, "close", None)
            if close is not None:
                close()
        overall = {k: _sum([u[k] for u in all_usage]) for k in all_usage[0]} if all_usage else {}
        pooled = {ref: combine_tallies([t[ref] for t in all_tallies]) for ref in bench.config.references}
        rows.append(_row(ALL, overall, pooled))
        settings.append({"setting": setting, "critic_id": built.critic.critic_id, "oracle": built.mode == "resim",
                         "params": params, "rows": rows})  # fmt: skip
    return {
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_VERSION,
        "bench_version": BENCH_VERSION,
        "bench_config": bench.config.to_dict(),
        "bench_dir": str(bench.root),
        "critic": run.critic,
        "model": model,
        "base_url": base_url,
        "imported": run.credits_file is not None,
        "credits_file": "" if run.credits_file is None else str(run.credits_file),
        "limit": run.limit,
        "references": list(bench.config.references),
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
    }


def _sum(values: list[Any]) -> Any:
    """Sum of usage values (None when any is None: an unpriced run has no dollars)."""
    return None if any(v is None for v in values) else sum(values)


def default_results_path(critic: str, model: str = "", settings: tuple[str, ...] = SETTINGS) -> Path:
    """``critic-bench/<critic>[-<model>][-<setting>].json`` (the setting only when just one ran)."""
    name = critic + (f"-{model}" if model else "") + (f"-{settings[0]}" if len(settings) == 1 else "")
    return Path("critic-bench") / (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") + ".json")


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """Write the results JSON atomically (parents created); returns ``path``."""
    write_json_atomic(Path(path), results)
    return Path(path)
