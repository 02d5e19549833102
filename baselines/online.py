"""Online independent Double-DQN whose per-agent rewards come from a credit critic (``ddqn-online``).

Input: an env id and a critic id (``team``, ``uniform``, ``counterfactual``, ``shapley``,
``llm-mca``, ``llm-taca``). Output: a run directory that ``load_policy`` / ``llmca evaluate``
read (``config.json``, ``model.safetensors``), a learning curve ``curve.jsonl`` (one row per
evaluation), resumable checkpoints and ``dataset/``, every collected episode with the critic's
credits in the standard layout (see ``online_io``).

The loop, per block of ``critic_every`` episodes::

    play the block ε-greedily (one AgentNet shared by all agents, agent-id one-hot, legal actions only)
    critic annotates the block   → credits [T, N] per episode   (team: r_team for every agent, no critic)
    agent i's transitions enter the replay buffer with reward credits[:, i]
    round(updates_per_step × block steps) Double-DQN updates, Huber loss, target net hard/Polyak

An episode whose annotation failed (NaN credits: an LLM reply that stayed invalid, a request
that failed) falls back to the team reward and is counted (``fallback_episodes``). Reference
critics re-simulate from env snapshots exactly as ``llmca annotate`` does; LLM critics use the
same client, cache and failure rules. LLM-TACA appends the assigned task (one-hot) to each
agent's input *in the learner*, dropped with a probability ramped to 1 (``TaskDropout``); the
behaviour and final policies always act without it, since tasks arrive only after an episode.

Example::

    from llmca_data.baselines.online import OnlineConfig, train_online

    result = train_online(OnlineConfig("lbf-8x8-2p-2f-coop", critic="shapley", episodes=500), Path("runs/shap-0"))
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from llmca_data.annotation.critic import Critic, CriticOutput, run_critic
from llmca_data.annotation.registry import CriticOptions, check_critic, make_critic
from llmca_data.config import ConfigError, JsonConfig, bounded
from llmca_data.dataset import writing
from llmca_data.envs import MultiAgentEnv, make_env
from llmca_data.loaders.arrays import CreditScale, TeamReward, check_credit_scale, check_team_reward
from llmca_data.rollout import Episode, episode_seed, package_versions

from .device import resolve_device
from .online_io import RUN_DATASET, RunDataset, load_checkpoint, save_checkpoint
from .online_learner import ALGO, DoubleDQN, GreedyAgents, evaluate_greedy, rewards_from
from .policy import RUN_CONFIG, RunError, load_config, save_run
from .training import Progress

log = logging.getLogger(__name__)

CURVE = "curve.jsonl"
TIMERS = ("env", "learner", "critic", "eval", "io")
_RESUMABLE_CHANGES = frozenset({"episodes", "device"})
"""Config fields a resumed run may change."""


@dataclass(frozen=True)
class OnlineConfig(JsonConfig):
    """One online run (saved in ``config.json``); defaults follow common DQN practice, not the paper's
    (unpublished) settings."""

    env_id: str
    critic: str = "team"
    """Reward source: ``team`` (shared reward for every agent, no critic), or a critic id of the registry."""
    episodes: int = 1000
    """Episodes to collect in total (a resumed run may raise it)."""
    seed: int = bounded(0, 0, None)
    """Seeds the network, minibatches and env episodes (episode i plays ``episode_seed(seed, i)``)."""
    critic_every: int = 1
    """Episodes per critic call: the critic annotates them together, then they enter the buffer."""
    eval_every: int = 50
    """Evaluate (one ``curve.jsonl`` row) every this many episodes; a multiple of ``critic_every``."""
    eval_episodes: int = 10
    """Greedy episodes per evaluation, on evaluation seeds (disjoint from data and final-eval seeds)."""
    checkpoint_every: int = 200
    """Commit the dataset and write a checkpoint every this many episodes (and at the end)."""
    device: str = "auto"
    hidden: tuple[int, ...] = (128, 128)
    lr: float = bounded(5e-4, 0.0, None, open_low=True)
    gamma: float = bounded(0.99, 0.0, 1.0)
    batch_size: int = 64
    buffer_size: int = 100_000
    """Replay capacity in transitions (each holds every agent)."""
    learning_starts: int = 500
    """Transitions in the buffer before the first update."""
    updates_per_step: float = bounded(0.25, 0.0, None)
    """Gradient updates per collected env step (done after each block)."""
    target_every: int = 200
    """Updates between target-network updates."""
    tau: float = bounded(1.0, 0.0, 1.0, open_low=True)
    """Target update rate: 1 copies every ``target_every`` updates; < 1 with ``target_every=1`` is Polyak."""
    grad_clip: float = 10.0
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_fraction: float = 0.5
    """Fraction of the episodes over which ε decays linearly from ``eps_start`` to ``eps_end``."""
    task_dropout_end: float = 0.8
    """LLM-TACA: fraction of the episodes at which the task input's dropout probability reaches 1."""
    credit_scale: CreditScale = "none"
    """How a critic's credits are put on the team reward's scale before they enter the buffer (the
    offline loaders' ``credit_scale``; the run's dataset keeps them raw): ``none`` (the critic's own
    scale; an LLM's may dwarf the env reward), ``step`` (each step sums to its team reward, so an
    unrewarded step gets 0 whatever its credit) or ``episode`` (each episode sums to its return,
    all its credits scaled by one factor, so credit for steps that lead to reward survives). A
    run written with the older ``normalize_credits: true`` loads as ``step``."""
    team_reward: TeamReward = "true"
    """What the learner sees of the team reward: ``true``, or ``delayed`` (each episode's return at
    its last step only). Delayed runs take ``team``, ``env`` (each agent's episode total at the end)
    or a critic that saw the delayed reward (``shapley-delayed``, ``counterfactual-delayed``, an LLM
    critic with ``llm.team_reward`` delayed)."""
    critic_options: CriticOptions = field(default_factory=CriticOptions)
    """The critic's options, as ``llmca annotate`` takes them (counterfactual ``horizon``, Shapley
    ``samples``, the nested ``llm`` endpoint/model/format); ``seed`` is replaced by the run's."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_credit_scale(self.credit_scale)
        check_team_reward(self.team_reward)
        if self.critic != "team":
            critic_id = check_critic(self.critic, self.critic_options)
            if self.team_reward == "delayed" and self.critic != "env" and not critic_id.endswith("-delayed"):
                raise ConfigError(
                    f"critic {critic_id} credits every step's team reward, which a delayed run does not see: use "
                    "team, env, shapley-delayed, counterfactual-delayed or an LLM critic with team_reward delayed"
                )
        if min(self.episodes, self.critic_every, self.eval_every, self.eval_episodes, self.checkpoint_every) < 1:
            raise ConfigError("episodes, critic_every, eval_every, eval_episodes and checkpoint_every must be >= 1")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) % self.critic_every:
                raise ConfigError(
                    f"{name}={getattr(self, name)} must be a multiple of critic_every={self.critic_every}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = False, owner: str | None = None, prefix: str = "") -> Self:
        """``JsonConfig.from_dict``, reading the older ``normalize_credits`` as ``credit_scale``
        (``upgrade_settings``), so that old runs' ``config.json`` still load and resume."""
        owner = owner or cls.__name__
        if strict and LEGACY_NORMALIZE in data:
            log.warning("%s: %r is deprecated; use credit_scale (none | step | episode)", owner, LEGACY_NORMALIZE)
        return super().from_dict(upgrade_settings(data, owner), strict, owner, prefix)


LEGACY_NORMALIZE = "normalize_credits"
"""The boolean ``OnlineConfig`` field that ``credit_scale`` replaced (true is ``step``)."""


def upgrade_settings(data: dict[str, Any], owner: str = "OnlineConfig") -> dict[str, Any]:
    """``data`` with an older run's ``normalize_credits: bool`` replaced by ``credit_scale``
    (true → ``step``, false → ``none``); ``data`` itself when it has no such key.

    Raises:
        ConfigError: ``normalize_credits`` is not a bool, or is true while ``credit_scale`` says
            other than ``step``.
    """
    if LEGACY_NORMALIZE not in data:
        return data
    out = dict(data)
    legacy = out.pop(LEGACY_NORMALIZE)
    if not isinstance(legacy, bool):
        raise ConfigError(f"{owner}: config key {LEGACY_NORMALIZE!r} (deprecated) must be bool, got {legacy!r}; "
                          "use credit_scale: none | step | episode")  # fmt: skip
    mapped = "step" if legacy else "none"
    if legacy and out.setdefault("credit_scale", mapped) != mapped:
        raise ConfigError(f"{owner}: {LEGACY_NORMALIZE}: true means credit_scale 'step', but credit_scale is "
                          f"{out['credit_scale']!r}; drop {LEGACY_NORMALIZE}")  # fmt: skip
    out.setdefault("credit_scale", mapped)
    return out


@dataclass(frozen=True)
class OnlineResult:
    """What a (resumed) run reached: totals, the last evaluation and the wall time per part."""

    run_dir: Path
    episodes: int
    env_steps: int
    final_return: float | None
    final_score: float | None
    fallback_episodes: int
    critic_calls: int
    seconds: dict[str, float]


def make_online_critic(config: OnlineConfig) -> Critic | None:
    """The critic of ``config.critic`` (None for ``team``), built by the registry as ``llmca annotate`` builds it."""
    if config.critic == "team":
        return None
    return make_critic(config.critic, replace(config.critic_options, seed=config.seed))


def train_online(
    config: OnlineConfig,
    run_dir: Path,
    *,
    critic: Critic | None = None,
    env_factory: Callable[[], MultiAgentEnv] | None = None,
    progress: Progress | None = None,
) -> OnlineResult:
    """Train (or resume) the run in ``run_dir``; see the module docstring.

    ``critic`` replaces the one ``config.critic`` names (its ``critic_id`` must match), and
    ``env_factory`` the env ``config.env_id`` names (tests use both).

    Raises:
        ValueError: ``run_dir`` holds a run with another config (only ``episodes``/``device`` may change).
    """
    run_dir = Path(run_dir)
    device = resolve_device(config.device)
    factory = env_factory or (lambda: make_env(config.env_id, **config.env_kwargs))
    critic = critic if critic is not None else make_online_critic(config)
    if critic is not None and critic.critic_id != check_critic(config.critic, config.critic_options):
        raise ValueError(f"the critic passed has id {critic.critic_id!r}, the config names {config.critic!r}")
    _check_resume(run_dir, config)
    env, critic_env = factory(), factory()
    learner = DoubleDQN(env, config, device)
    body = _run_config(config, learner, critic)
    description = (
        f"online {ALGO} ({config.critic} reward), ε-greedy with ε decaying {config.eps_start}→{config.eps_end}"
    )
    try:
        with writing(run_dir / RUN_DATASET) as writer:
            dataset = RunDataset(writer, env.spec, critic, ALGO, description)
            return _Loop(config, run_dir, learner, env, critic_env, critic, dataset, body, progress).run()
    finally:
        close = getattr(critic, "close", None)
        if close is not None:
            close()


class _Loop:
    """The collection / annotation / learning loop of one run, with its counters."""

    def __init__(
        self,
        config: OnlineConfig,
        run_dir: Path,
        learner: DoubleDQN,
        env: MultiAgentEnv,
        critic_env: MultiAgentEnv,
        critic: Critic | None,
        dataset: RunDataset,
        body: dict[str, Any],
        progress: Progress | None,
    ) -> None:
        self.config, self.run_dir, self.learner, self.critic = config, run_dir, learner, critic
        self.critic_delayed = critic is not None and critic.critic_id.endswith("-delayed")
        self.env, self.critic_env, self.dataset, self.body, self.progress = env, critic_env, dataset, body, progress
        self.counters: dict[str, Any] = {"env_steps": 0, "critic_calls": 0, "llm_requests": 0, "fallback_episodes": 0,
                                         "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "loss": None,
                                         "seconds": dict.fromkeys(TIMERS, 0.0)}  # fmt: skip
        self.pending: list[tuple[Episode, CriticOutput | None]] = []
        self.last_eval: dict[str, Any] = {}

    def run(self) -> OnlineResult:
        cfg = self.config
        state = load_checkpoint(self.run_dir, self.learner.nets(), self.learner.optim, self.learner.buffer)
        done = 0
        if state is not None:
            done = int(state.pop("episodes"))
            self.learner.restore(state.pop("learner"))
            self.counters.update(state)
            log.info("resuming %s from its checkpoint after %d episodes", self.run_dir, done)
        rows = _trim_curve(self.run_dir / CURVE, done)
        self.last_eval = {k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("eval_")}
        cached = {e.episode_id: (e, o) for e, o in self.dataset.load_after(done)}
        save_run(self.run_dir, self.body, self.learner.policy_tensors())
        self._report(done)
        while done < cfg.episodes:
            ids = list(range(done, min(done + cfg.critic_every, cfg.episodes)))
            if all(i in cached for i in ids):  # committed before a kill: reuse, never re-annotate
                block = [cached.pop(i) for i in ids]
            else:
                block = self._annotate(self._play(ids))
                self.pending += block
            with self._timer("learner"):
                for episode, output in block:
                    reward, task, fell_back = rewards_from(episode, output, cfg.credit_scale, cfg.team_reward,
                                                           self.critic_delayed)  # fmt: skip
                    self.learner.buffer.add_episode(episode, reward, task)
                    self.counters["fallback_episodes"] += int(fell_back)
                steps = sum(e.length for e, _ in block)
                self.counters["env_steps"] += steps
                self.learner.set_progress(ids[-1] + 1)
                loss = self.learner.update(round(cfg.updates_per_step * steps))
                if loss is not None:
                    self.counters["loss"] = loss
            done = ids[-1] + 1
            last = done == cfg.episodes
            if done % cfg.eval_every == 0 or last:
                self._evaluate(done)
            if done % cfg.checkpoint_every == 0 or last:
                self._checkpoint(done)
            self._report(done)
        return OnlineResult(self.run_dir, done, self.counters["env_steps"], self.last_eval.get("eval_return"),
                            self.last_eval.get("eval_score"), self.counters["fallback_episodes"],
                            self.counters["critic_calls"], dict(self.counters["seconds"]))  # fmt: skip

    def _timer(self, name: str) -> _Timer:
        return _Timer(self.counters["seconds"], name)

    def _play(self, ids: list[int]) -> list[Episode]:
        with self._timer("env"):
            out = []
            for i in ids:
                policy = GreedyAgents(self.learner.online, self.learner.device, self.learner.epsilon(i))
                episode = policy.play(self.env, episode_seed(self.config.seed, i), "replay")
                episode.episode_id = i
                out.append(episode)
            return out

    def _annotate(self, episodes: list[Episode]) -> list[tuple[Episode, CriticOutput | None]]:
        if self.critic is None:
            return [(e, None) for e in episodes]
        with self._timer("critic"):
            sent = int(getattr(self.critic, "requests_sent", 0))
            outputs = run_critic(self.critic, episodes, self.critic_env)
            self.counters["critic_calls"] += 1
            self.counters["llm_requests"] += int(getattr(self.critic, "requests_sent", 0)) - sent
            for o in outputs:
                self.counters["tokens_in"] += o.tokens_in
                self.counters["tokens_out"] += o.tokens_out
                self.counters["cost_usd"] += o.cost_usd
        failed = sum(o.status == "failed" for o in outputs)
        if failed:
            first = next(o.error for o in outputs if o.status == "failed")
            log.warning("%d of %d episodes failed annotation (%s); they learn from the team reward",
                        failed, len(outputs), first[:200])  # fmt: skip
        return list(zip(episodes, outputs, strict=True))

    def _evaluate(self, done: int) -> None:
        with self._timer("eval"):
            self.last_eval = evaluate_greedy(self.learner, self.env, self.config)
        c = self.counters
        row = {"episodes": done, "env_steps": c["env_steps"], "updates": self.learner.updates, **self.last_eval,
               "epsilon": self.learner.epsilon(done - 1), "task_dropout": self.learner.task_dropout(),
               "loss": c["loss"], "critic_calls": c["critic_calls"], "llm_requests": c["llm_requests"],
               "fallback_episodes": c["fallback_episodes"], "tokens_in": c["tokens_in"], "tokens_out": c["tokens_out"],
               "cost_usd": round(c["cost_usd"], 6), "wall_s": round(sum(c["seconds"].values()), 3),
               **{f"{k}_s": round(v, 3) for k, v in c["seconds"].items()}}  # fmt: skip
        with (self.run_dir / CURVE).open("a") as f:
            f.write(json.dumps(row) + "\n")

    def _checkpoint(self, done: int) -> None:
        with self._timer("io"):
            # the dataset first: after a kill it may be ahead of the checkpoint, never behind
            self.dataset.commit([e for e, _ in self.pending], [o for _, o in self.pending])
            self.pending = []
            state = {**self.counters, "learner": self.learner.state()}
            save_checkpoint(self.run_dir, done, self.learner.nets(), self.learner.optim, self.learner.buffer, state)
            save_run(self.run_dir, self.body, self.learner.policy_tensors())

    def _report(self, done: int) -> None:
        if self.progress is None:
            return
        seconds = self.counters["seconds"]
        status = f"ε {self.learner.epsilon(max(done - 1, 0)):.2f}"
        if self.last_eval:
            score = self.last_eval.get("eval_score")
            status += f" · eval {self.last_eval['eval_return']:.3g}" + ("" if score is None else f" ({score:.0f})")
        if self.critic is not None and sum(seconds.values()) > 0:
            status += f" · critic {100 * seconds['critic'] / sum(seconds.values()):.0f}% of time"
        self.progress(done, self.config.episodes, status)


class _Timer:
    """Adds the seconds spent inside the ``with`` block to ``seconds[name]``."""

    def __init__(self, seconds: dict[str, float], name: str) -> None:
        self.seconds, self.name = seconds, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self.name] += time.perf_counter() - self.start


def _check_resume(run_dir: Path, config: OnlineConfig) -> None:
    if not (run_dir / RUN_CONFIG).is_file():
        return
    old = load_config(run_dir)
    if old.get("algo") != ALGO:
        raise RunError(f"{run_dir} holds a {old.get('algo')!r} run, not {ALGO}; choose another --out")
    new, defaults = config.to_dict(), OnlineConfig(config.env_id).to_dict()
    old = {**defaults, **upgrade_settings(old, str(run_dir / RUN_CONFIG))}  # a field added since: its default
    changed = sorted(k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k])
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} → {new[k]!r}" for k in changed)
        raise RunError(f"{run_dir} holds a run with another config ({diff}); resume with the same arguments "
                         "(only --episodes and --device may change) or choose another --out")  # fmt: skip


def _trim_curve(path: Path, done: int) -> list[dict[str, Any]]:
    """Drop curve rows written after the checkpoint a resumed run restarts from (they are redone);
    the rows kept."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keep = [r for r in rows if r["episodes"] <= done]
    if len(keep) != len(rows):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        tmp.replace(path)
    return keep


def _run_config(config: OnlineConfig, learner: DoubleDQN, critic: Critic | None) -> dict[str, Any]:
    """``config.json``: the config, the sizes ``load_policy`` needs, seeds and critic provenance."""
    spec = learner.spec
    params = critic.params() if critic is not None else {"type": "team"}
    body: dict[str, Any] = {
        **config.to_dict(), "algo": ALGO, "n_agents": spec.n_agents, "obs_dim": spec.obs_dim,
        "n_actions": spec.n_actions, "n_tasks": learner.n_tasks, "critic_params": params,
        "critic_model": params.get("model", ""), "dataset": RUN_DATASET, "curve": CURVE, "versions": package_versions(),
        "seeds": {"train": config.seed, "episode_seed": f"episode_seed({config.seed}, i)",
                  "eval": "eval_seed(PERIODIC_EVAL_OFFSET + k)"},
    }  # fmt: skip
    if config.critic.startswith("llm-"):
        from llmca_data.annotation.llm.prompt import prompt_version

        body["prompt_version"] = prompt_version(config.env_id, config.critic)
    return body
