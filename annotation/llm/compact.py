"""The compact line format of the shares-form critics: only what changes, once per step.

Input: ``describe()`` before each step of a window, the joint actions ``int[L, N]``, the team
rewards the critic is shown ``float[L]`` and the evidence of each step (``evidence_text``, "" for
none). Output: a ``RenderedEpisode`` whose header holds the static facts (levels, food and goal
positions, module weights) and whose lines hold the rest, positionally in agent order::

    LBF         t=5 r=0.50 | 2,3 5,5 | LOAD LOAD | event agent_0+agent_1 loaded food_1
    RWARE       t=3 | 9,2v 7,0< shelf_5 | req shelf_1 1,2, shelf_5 | FORWARD NOOP
    Spaceworld  t=4 | 5,1 3,7 module_0 7,1 off2 | free module_1 2,5 | debris 1,1^ | UP GRAB NOOP

``r=`` appears only on rewarded steps; RWARE's requested shelves and Spaceworld's free modules
only on the first line and when they change. The dense form keeps ``prompt.render_episode``'s
full lines (its reply cache and prompt versions stay as they were); ``templates/compact_*.txt``
describe this format to the model. The small model splits digits into single tokens, so a line
here costs about half the tokens of the full one (``benchmarks/llm_speed.py`` measures it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from llmca_data.envs import env_spec
from llmca_data.envs.ids import EnvId

from .prompt import RenderedEpisode

_ARROWS: Mapping[str, str] = {"up": "^", "down": "v", "left": "<", "right": ">"}
_VELOCITY: Mapping[tuple[int, int], str] = {(-1, 0): "^", (1, 0): "v", (0, -1): "<", (0, 1): ">"}


def _rc(pos: Sequence[int]) -> str:
    return f"{int(pos[0])},{int(pos[1])}"  # row,col without brackets: two tokens fewer per position


def _header(family: str, d: Mapping[str, Any]) -> str:
    rows, cols = d["grid"]
    head = f"grid {rows}x{cols}"
    if family == "lbf":
        agents = ", ".join(f"{a['id']} L{a['level']}" for a in d["agents"])
        food = ", ".join(f"{f['id']} {_rc(f['pos'])} L{f['level']}" for f in d["food"] if f["pos"] is not None)
        return f"{head}; levels {agents}; food {food or '-'}"
    if family == "rware":
        return f"{head}; goals " + ", ".join(_rc(g) for g in d["goals"])
    weights = ", ".join(f"{m['id']} w{m['weight']}" for m in d["modules"] if m["status"] != "delivered")
    docks = ", ".join(_rc(c) for c in d["docks"])
    return f"{head}; station {_rc(d['station'])}; docks {docks}; modules {weights or '-'}"


def _lbf(d: Mapping[str, Any]) -> tuple[str, str]:
    return " ".join(_rc(a["pos"]) for a in d["agents"]), ""


def _rware(d: Mapping[str, Any]) -> tuple[str, str]:
    agents = " ".join(
        f"{_rc(a['pos'])}{_ARROWS.get(a['dir'], a['dir'])}" + (f" {a['carrying']}" if a["carrying"] else "")
        for a in d["agents"]
    )
    carried = {a["carrying"] for a in d["agents"]}  # a carried shelf moves with its robot: no position
    requested = ", ".join(s["id"] + ("" if s["id"] in carried else f" {_rc(s['pos'])}")
                          for s in d["shelves"] if s["requested"])  # fmt: skip
    return agents, f"req {requested or '-'}"


def _spaceworld(d: Mapping[str, Any]) -> tuple[str, str]:
    agents = " ".join(
        _rc(a["pos"]) + "".join(f" {x}" for x in (a["carrying"], a["disabled"] and f"off{a['disabled']}") if x)
        for a in d["agents"]
    )
    free = ", ".join(f"{m['id']} {_rc(m['pos'])}" for m in d["modules"] if m["status"] == "free")
    return agents, f"free {free or '-'}"


def _debris(d: Mapping[str, Any]) -> str:
    moving = " ".join(_rc(x["pos"]) + _VELOCITY.get((int(x["vel"][0]), int(x["vel"][1])), ".") for x in d["debris"])
    return f" | debris {moving or '-'}"


_STATE: Mapping[str, Callable[[Mapping[str, Any]], tuple[str, str]]] = {
    "lbf": _lbf, "rware": _rware, "spaceworld": _spaceworld,
}  # fmt: skip


def render_compact(
    env_id: str,
    describes: Sequence[Mapping[str, Any]],
    actions: np.ndarray,
    shown: np.ndarray,
    events: Sequence[str],
    *,
    episode_id: int,
    t0: int = 0,
) -> RenderedEpisode:
    """Steps ``t0 .. t0 + L - 1`` in the compact format (``shown``: the team rewards the critic sees)."""
    family = EnvId.parse(env_id).family
    acts = np.asarray(actions)  # [L, N]
    rewards = np.asarray(shown, np.float64).reshape(-1)  # [L]
    length = len(describes)
    if acts.shape[:1] != (length,) or rewards.shape != (length,) or len(events) != length:
        raise ValueError(f"render_compact: {length} describes, actions {acts.shape}, {rewards.shape[0]} rewards, "
                         f"{len(events)} events; expected L of each")  # fmt: skip
    names = env_spec(env_id).action_names
    lines, previous = [], None
    for k, d in enumerate(describes):
        agents, changing = _STATE[family](d)
        parts = [f"t={t0 + k}" + (f" r={rewards[k]:.2f}" if rewards[k] != 0 else ""), agents]
        if changing and changing != previous:
            parts.append(changing)
        previous = changing
        line = " | ".join(parts) + (_debris(d) if family == "spaceworld" else "")
        line += " | " + " ".join(names[int(a)] for a in acts[k])
        lines.append(line + (f" | event {events[k]}" if events[k] else ""))
    header = _header(family, describes[0]) if length else ""
    return RenderedEpisode(episode_id=episode_id, t0=t0, length=length, lines=tuple(lines), header=header)
