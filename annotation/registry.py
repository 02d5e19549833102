"""The critic registry: every critic id (reference, LLM and plugin) and how to build it.

Input: a critic id and ``CriticOptions`` (one typed config holding every critic's options;
the LLM options are the nested ``LLMConfig``). Output: a ``Critic`` (``make_critic``), or the
checked id without building anything (``check_critic``, for recipes and configs).

The CLI (`llmca annotate`), the pipeline and the online loop all ask this registry. Ids:

- ``uniform``, ``shapley``, ``counterfactual``, ``env`` (reference critics; ``counterfactual`` with
  ``horizon`` H > 1 has the id ``counterfactual-hH``, which is also accepted as a name);
  ``shapley-delayed``, ``counterfactual-delayed`` (their variants for a team reward seen only at
  the episode's end: values are returns from t to the end);
- ``llm-mca``, ``llm-taca`` (dense form), ``llm-mca-shares``, ``llm-taca-shares``, ``llm-mca-temporal``
  (shares form; the LLM critics: ``llm.team_reward`` delayed/noisy adds a suffix);
- plugins: ``register_critic`` in code, or an entry point in the group ``llmca_data.critics``
  whose object is a ``CriticEntry``.

Example::

    from llmca_data.annotation.registry import CriticOptions, make_critic

    critic = make_critic("counterfactual", CriticOptions(horizon=5))   # critic.critic_id == "counterfactual-h5"
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Literal

from llmca_data.config import ConfigError, JsonConfig, bounded
from llmca_data.errors import UnknownCriticError

from .critic import Critic
from .llm.config import LLMConfig

ENTRY_POINT_GROUP = "llmca_data.critics"
_HORIZON_ID = re.compile(r"counterfactual-h([1-9][0-9]*)")
_SAFE_ID = re.compile(r"[a-z][a-z0-9]{0,31}(?:-[a-z0-9]{1,32}){0,7}")
"""Every critic id: lower-case words of letters and digits joined by single hyphens (≤ 8 words)."""
RESERVED_IDS = ("team",)
"""Names of rewards that are not critics (``--critic team`` online: learn from the team reward)."""


@dataclass(frozen=True)
class CriticOptions(JsonConfig):
    """The options of every critic; each critic reads only its own (saved in its ``params``)."""

    horizon: int = bounded(1, 1, None)
    """``counterfactual``: steps compared after the replaced action (id ``counterfactual-hH`` when > 1)."""
    gamma: float = bounded(0.99, 0.0, 1.0)
    """``counterfactual``: discount over the horizon."""
    samples: int = bounded(256, 1, None)
    """``shapley``: random agent orders when N > 4 (exact up to 4)."""
    seed: int = bounded(0, 0, None)
    """Seeds the sampled critics (Shapley orders, the LLM's sampling)."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """``llm-mca`` / ``llm-taca``: endpoint, model, reply format, windows, retries, budget."""


@dataclass(frozen=True)
class CriticEntry:
    """One registered critic: its id, what kind it is, and the function that builds it."""

    critic_id: str
    kind: Literal["reference", "llm", "plugin"]
    summary: str
    build: Callable[[str, CriticOptions], Critic]
    """``build(critic_id, options)``; ``critic_id`` is the entry's id."""


def _uniform(critic_id: str, options: CriticOptions) -> Critic:
    from .uniform import UniformCritic

    return UniformCritic()


def _env(critic_id: str, options: CriticOptions) -> Critic:
    from .uniform import EnvCritic

    return EnvCritic()


def _shapley(critic_id: str, options: CriticOptions) -> Critic:
    from .shapley import ShapleyCritic

    return ShapleyCritic(samples=options.samples, seed=options.seed, delayed=critic_id.endswith("-delayed"))


def _counterfactual(critic_id: str, options: CriticOptions) -> Critic:
    from .counterfactual import CounterfactualCritic

    if critic_id.endswith("-delayed"):
        if options.horizon != 1:
            raise ConfigError(f"{critic_id} runs to the episode's end; drop horizon={options.horizon}")
        return CounterfactualCritic(delayed=True)
    return CounterfactualCritic(horizon=options.horizon, gamma=options.gamma)


def _llm(critic_id: str, options: CriticOptions) -> Critic:
    from .llm.critic import LLMCritic

    return LLMCritic(replace(options.llm, critic=critic_id, seed=options.seed))


_BUILTIN: tuple[CriticEntry, ...] = (
    CriticEntry("uniform", "reference", "the team reward split equally between agents", _uniform),
    CriticEntry("shapley", "reference", "one-step Shapley value of each agent's action (re-simulated)", _shapley),
    CriticEntry(
        "counterfactual",
        "reference",
        "team reward lost when one agent's action is replaced (re-simulated)",
        _counterfactual,
    ),
    CriticEntry("env", "reference", "the env's own per-agent reward (free; the structural oracle here)", _env),
    CriticEntry("llm-mca", "llm", "an LLM splits the team reward per agent and step (LLM-MCA)", _llm),
    CriticEntry("llm-taca", "llm", "LLM-MCA plus one task per agent and step (LLM-TACA)", _llm),
    CriticEntry("llm-mca-shares", "llm", "an LLM gives each agent's percent share of each reward (sums to it)", _llm),
    CriticEntry("llm-taca-shares", "llm", "shares plus one task per agent per segment between rewards", _llm),
    CriticEntry("llm-mca-temporal", "llm", "shares, part of each moved to the earlier steps that enabled it", _llm),
    CriticEntry(
        "shapley-delayed",
        "reference",
        "Shapley value of each agent's action on the episode's return (the delayed team reward's reference)",
        _shapley,
    ),
    CriticEntry(
        "counterfactual-delayed",
        "reference",
        "episode return lost when one agent's action is replaced (the delayed team reward's reference)",
        _counterfactual,
    ),
)
_REGISTRY: dict[str, CriticEntry] = {e.critic_id: e for e in _BUILTIN}
_plugins_loaded = False


def register_critic(entry: CriticEntry, *, replace_existing: bool = False) -> None:
    """Add a plugin critic (its column is ``credit_<id with - → _>``).

    Raises:
        ValueError: the id is taken (pass ``replace_existing=True`` to replace a plugin) or not
            lower-case letters, digits and hyphens.
    """
    if not _SAFE_ID.fullmatch(entry.critic_id):
        raise ConfigError(f"critic id {entry.critic_id!r}: use lower-case words joined by '-', e.g. my-critic")
    taken = _REGISTRY.get(entry.critic_id)
    if taken is not None and (taken.kind != "plugin" or not replace_existing):
        raise ConfigError(f"critic id {entry.critic_id!r} is already registered ({taken.kind}); choose another id")
    _REGISTRY[entry.critic_id] = entry


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        entry = point.load()
        if not isinstance(entry, CriticEntry):
            raise ConfigError(f"entry point {point.value!r} ({ENTRY_POINT_GROUP}) must be a CriticEntry")
        register_critic(entry, replace_existing=True)


def critic_ids(kind: str | None = None) -> tuple[str, ...]:
    """The registered ids (of one ``kind``: reference, llm, plugin), in registration order."""
    _load_plugins()
    return tuple(k for k, e in _REGISTRY.items() if kind is None or e.kind == kind)


def resolve(critic_id: str, options: CriticOptions | None = None) -> tuple[CriticEntry, CriticOptions]:
    """The entry of ``critic_id`` and the options it is built with (``counterfactual-hH`` sets the horizon).

    Raises:
        UnknownCriticError: the id is not registered (the message lists the ids).
        ConfigError: ``counterfactual-hH`` with a different ``options.horizon``.
    """
    _load_plugins()
    options = options if options is not None else CriticOptions()
    match = _HORIZON_ID.fullmatch(critic_id)
    if match is not None:
        horizon = int(match.group(1))
        if options.horizon not in (1, horizon):
            raise ConfigError(f"critic {critic_id!r} has horizon {horizon}, but horizon={options.horizon} was given")
        return _REGISTRY["counterfactual"], replace(options, horizon=horizon)
    entry = _REGISTRY.get(critic_id)
    if entry is None:
        raise UnknownCriticError(
            f"unknown critic {critic_id!r}: choose one of {', '.join(critic_ids())} (counterfactual with "
            "--horizon H is counterfactual-hH); to import credits computed elsewhere use --from-file FILE "
            "--critic-id NAME"
        )
    return entry, options


def check_import_id(critic_id: str) -> str:
    """``critic_id`` checked as the id of credits imported from a file (``annotate --from-file``).

    Raises:
        ConfigError: the id is not lower-case words joined by '-', or it is (or could be taken
            for) a registered critic: a built-in or plugin id, ``counterfactual-h<N>``, any
            ``llm-*`` id, or a reserved name (``team``).
    """
    if not isinstance(critic_id, str) or not _SAFE_ID.fullmatch(critic_id):
        raise ConfigError(
            f"critic id {critic_id!r}: use lower-case words of letters and digits joined by '-', e.g. my-critic"
        )
    if critic_id in critic_ids() or critic_id in RESERVED_IDS:
        raise ConfigError(
            f"critic id {critic_id!r} belongs to a registered critic or reward; imported credits need their own id "
            f"(e.g. imported-{critic_id})"
        )
    if _HORIZON_ID.fullmatch(critic_id) or critic_id.startswith("llm-"):
        raise ConfigError(
            f"critic id {critic_id!r} falls in a built-in family (counterfactual-h<N>, llm-*); imported credits need "
            "an id of their own, e.g. imported-mine"
        )
    return critic_id


def check_critic(critic_id: str, options: CriticOptions | None = None) -> str:
    """The id the critic will write under, checked without starting anything (LLM critics are not built)."""
    entry, resolved = resolve(critic_id, options)
    if entry.kind == "llm":
        return replace(resolved.llm, critic=entry.critic_id).critic_id
    return entry.build(entry.critic_id, resolved).critic_id


def make_critic(critic_id: str, options: CriticOptions | None = None) -> Critic:
    """Build the critic ``critic_id`` with ``options`` (defaults: ``CriticOptions()``)."""
    entry, resolved = resolve(critic_id, options)
    return entry.build(entry.critic_id, resolved)
