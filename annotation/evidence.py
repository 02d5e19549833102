"""Evidence of a step: which agents the state change names as the cause of a reward event.

Input: the env's ``describe()`` before and after one step and the step's joint action. Output:
the step's ``Event`` list (``agent_0+agent_1 loaded food_2``), read from the state change alone
(never from ``reward_env``):

* LBF: a food present before and gone after was loaded by the agents that chose LOAD next to it;
* RWARE: a robot that ends the step on a goal cell with a shelf requested before the step delivered it;
* Spaceworld: a module delivered during the step was delivered by the agents carrying it (or, when
  it was grabbed and delivered in one step, by the agents that chose GRAB next to it).

The shares critics print the events on each rewarded step's line; the critic benchmark's
``evidence-split`` row splits each reward equally among the agents they name, which measures
what the evidence alone gives away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmca_data.envs import env_spec
from llmca_data.envs.base import MultiAgentEnv
from llmca_data.envs.ids import EnvId
from llmca_data.rollout import Episode, replay_iter


@dataclass(frozen=True)
class Event:
    """One reward event of a step: the agents the state change names, and what they did."""

    agents: tuple[str, ...]
    verb: str
    """``loaded`` / ``delivered``."""
    target: str
    """The object (``food_2``, ``shelf_5``, ``module_1``)."""

    def text(self) -> str:
        return f"{'+'.join(self.agents)} {self.verb} {self.target}"


def _distance(a: Sequence[int], b: Sequence[int]) -> int:
    return abs(int(a[0]) - int(b[0])) + abs(int(a[1]) - int(b[1]))


def _lbf(before: Mapping[str, Any], after: Mapping[str, Any], names: Sequence[str]) -> list[Event]:
    events = []
    for food, later in zip(before["food"], after["food"], strict=True):
        if food["pos"] is None or later["pos"] is not None:
            continue
        loaders = tuple(
            a["id"] for a, name in zip(before["agents"], names, strict=True)
            if name == "LOAD" and _distance(a["pos"], food["pos"]) == 1
        )  # fmt: skip
        events.append(Event(loaders, "loaded", food["id"]))
    return events


def _rware(before: Mapping[str, Any], after: Mapping[str, Any], names: Sequence[str]) -> list[Event]:
    requested = {s["id"] for s in before["shelves"] if s["requested"]}
    goals = {tuple(g) for g in after["goals"]}
    return [
        Event((a["id"],), "delivered", a["carrying"])
        for a in after["agents"]
        if a["carrying"] in requested and tuple(a["pos"]) in goals
    ]


def _spaceworld(before: Mapping[str, Any], after: Mapping[str, Any], names: Sequence[str]) -> list[Event]:
    events = []
    for module, later in zip(before["modules"], after["modules"], strict=True):
        if module["status"] == "delivered" or later["status"] != "delivered":
            continue
        carriers = tuple(a["id"] for a in before["agents"] if a["carrying"] == module["id"])
        if not carriers:  # grabbed and delivered in one step: the agents that grabbed it
            carriers = tuple(
                a["id"] for a, name in zip(before["agents"], names, strict=True)
                if name == "GRAB" and _distance(a["pos"], module["pos"]) <= 1
            )  # fmt: skip
        events.append(Event(carriers, "delivered", module["id"]))
    return events


_EVENTS = {"lbf": _lbf, "rware": _rware, "spaceworld": _spaceworld}


def step_events(
    env_id: str, before: Mapping[str, Any], after: Mapping[str, Any], action: Sequence[int] | np.ndarray
) -> list[Event]:
    """The reward events of one step of ``env_id`` (``before``/``after``: ``describe()`` around it)."""
    names = [env_spec(env_id).action_names[int(a)] for a in np.asarray(action).reshape(-1)]
    return _EVENTS[EnvId.parse(env_id).family](before, after, names)


def replay_describes(episode: Episode, env: MultiAgentEnv) -> list[dict[str, Any]]:
    """``describe()`` before every step of ``episode`` and once after its last (T + 1 entries),
    replayed in ``env`` (``ReplayMismatchError`` when the env does not reproduce it)."""
    describes = [live.describe() for _, live in replay_iter(episode, env)]
    describes.append(env.describe())  # the replay has run to the end
    return describes


def episode_events(env_id: str, describes: Sequence[Mapping[str, Any]], actions: np.ndarray) -> list[list[Event]]:
    """``step_events`` of every step; ``describes`` has T + 1 entries (the last after the final step)."""
    acts = np.asarray(actions)  # [T, N]
    if len(describes) != acts.shape[0] + 1:
        raise ValueError(f"episode_events: {len(describes)} describes for {acts.shape[0]} steps; expected T + 1")
    return [step_events(env_id, describes[t], describes[t + 1], acts[t]) for t in range(acts.shape[0])]


def named_agents(events: Sequence[Event], agent_ids: Sequence[str]) -> list[int]:
    """Indices (in ``agent_ids`` order) of the agents the events name."""
    named = {a for e in events for a in e.agents}
    return [i for i, a in enumerate(agent_ids) if a in named]


def evidence_text(events: Sequence[Event]) -> str:
    """The evidence of a step as printed on its line (``-`` when the state change names nobody)."""
    return "; ".join(e.text() for e in events if e.agents) or "-"
