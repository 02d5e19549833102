"""Prompts of the LLM critic: episodes rendered as text lines, and the chat messages around them.

Input: an episode's per-step ``describe()`` dicts (the state *before* the action of step t),
its joint actions ``int[T, N]`` and team rewards ``float[T]``. Output: a ``RenderedEpisode``
(one compact line per timestep plus a header), the chat messages of one request, and the
``prompt_version`` that names the exact prompt wording.

Prompt layout (DESIGN.md §5): the system message is ``p_env + p_desc + p_defn``, the user message
starts with ``p_task``: template files under ``templates/`` that depend only on the env, the critic
and the agent names, so requests of one env/critic share a prefix (the server's KV cache reuses it).
The episodes and an "answer now" cue follow. The shares form's lines are ``compact.py``'s.

Templates are rendered with ``str.format``: literal braces are written ``{{`` / ``}}``. Fields:
``agents`` ("agent_0, agent_1"), ``n_agents``, ``target`` (``food`` / ``shelf`` / ``module``) and
``task_range`` (e.g. "0..1").

LLM-TACA task encoding (also stated in ``task_taca.txt``): per agent and timestep, the index j
of the target object ``<target>_j`` the agent should work on, −1 for no task — LBF: the food
``food_j``; RWARE: the shelf ``shelf_j`` (any of the warehouse's shelves, not only requested
ones); Spaceworld: the module ``module_j``. ``n_task_targets`` counts the targets of an env.

Dense-form line formats (``FORMAT_VERSION`` is part of ``prompt_version``):

* LBF: ``t=3 r=0.00 | agent_0 (2,3) L1, agent_1 (5,5) L2 | food_0 (1,1) L1, food_1 - | act
  agent_0=NORTH agent_1=LOAD``
* RWARE: ``t=3 r=0.00 | agent_0 (9,2) down -, agent_1 (7,0) left shelf_5 | req shelf_1 (1,2),
  shelf_2 (1,7) | act ...`` (only requested shelves; goal cells once in the header)
* Spaceworld: ``t=3 r=0.00 | agent_0 (5,1) -, agent_1 (3,7) module_0, agent_2 (7,1) -
  disabled=2 | module_0 (3,7) w1 carried, module_2 delivered | debris (1,1) up | act ...``
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmca_data.envs import env_spec
from llmca_data.envs.ids import EnvId

from .config import LLM_CRITICS as CRITICS
from .config import SHARES_CRITICS
from .config import TEAM_REWARDS as TEAM_REWARD_MODES
from .reply import RATIONALE_MAX_CHARS, SUMMARY_MAX_CHARS

TEMPLATE_DIR: Path = Path(__file__).parent / "templates"
"""Where the template files live (tests may point it elsewhere)."""
FORMAT_VERSION = "1"
"""Version of the Python-side wording (line formats here and in ``compact``, headers, cues in
``shares``); hashed into ``prompt_version``: bump it when any of them changes."""
TASK_TARGETS: Mapping[str, str] = {"lbf": "food", "rware": "shelf", "spaceworld": "module"}
"""LLM-TACA: the object kind a task index points at, per env family."""
CHARS_PER_TOKEN = 3.5
CREDIT_TOKENS = 6
"""Reply budget per credit number (e.g. ``-0.25, ``; small tokenizers split digits)."""
TASK_TOKENS = 3
"""Reply budget per task integer."""
STRUCTURE_TOKENS = 24
"""JSON keys, brackets and ids around one agent entry or one episode entry."""

_DIRECTIONS: Mapping[tuple[int, int], str] = {(-1, 0): "up", (1, 0): "down", (0, -1): "left", (0, 1): "right"}


@dataclass(frozen=True)
class RenderedEpisode:
    """One episode (or a window of it) as prompt text."""

    episode_id: int
    t0: int
    """Episode step of the first line (window start)."""
    length: int
    """Number of timestep lines in this window."""
    lines: tuple[str, ...]
    """One line per timestep, numbered ``t0 .. t0 + length - 1``."""
    header: str = ""
    """Static facts of the episode shown once (grid size; RWARE goals; Spaceworld station, docks)."""


def _family(env_id: str) -> str:
    return EnvId.parse(env_id).family


def _template_names(env_id: str, critic: str) -> tuple[str, str, str, str, str]:
    """``p_env``, ``p_desc`` (two files: the input in general, the family's line format), ``p_defn``, ``p_task``.

    The dense form's lines are ``render_episode``'s, the shares form's ``compact.render_compact``'s.
    """
    family = _family(env_id)
    if critic not in CRITICS:
        raise ValueError(f"unknown LLM critic {critic!r}: expected one of {', '.join(CRITICS)}")
    task = critic.removeprefix("llm-").replace("-", "_")
    if critic in SHARES_CRITICS:
        return f"env_{family}.txt", "desc_compact.txt", f"compact_{family}.txt", "defn_shares.txt", f"task_{task}.txt"
    return f"env_{family}.txt", "desc.txt", f"lines_{family}.txt", f"defn_{family}.txt", f"task_{task}.txt"


def _read_templates(env_id: str, critic: str, template_dir: Path | None) -> dict[str, str]:
    folder = TEMPLATE_DIR if template_dir is None else template_dir
    out = {}
    for name in _template_names(env_id, critic):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"prompt template {path} is missing; reinstall llmca-data")
        out[name] = path.read_text(encoding="utf-8")
    return out


def prompt_version(env_id: str, critic: str, *, template_dir: Path | None = None) -> str:
    """Short sha256 (12 hex) of the exact template texts used for ``env_id``'s family and ``critic``."""
    digest = hashlib.sha256(f"format={FORMAT_VERSION}\0".encode())
    for name, text in _read_templates(env_id, critic, template_dir).items():
        digest.update(f"{name}\0{text}\0".encode())
    return digest.hexdigest()[:12]


def n_task_targets(describe: Mapping[str, Any]) -> int:
    """How many LLM-TACA targets an env has (foods, shelves or modules of its ``describe()``)."""
    family = _family(str(describe["env_id"]))
    key = {"lbf": "food", "rware": "shelves", "spaceworld": "modules"}[family]
    return len(describe[key])


# ----------------------------------------------------------------------------------------- lines


def _rc(pos: Sequence[int]) -> str:
    return f"({int(pos[0])},{int(pos[1])})"


def _header(family: str, d: Mapping[str, Any]) -> str:
    rows, cols = d["grid"]
    head = f"grid {rows} rows x {cols} cols"
    if family == "rware":
        head += "; goals " + ", ".join(_rc(g) for g in d["goals"])
    elif family == "spaceworld":
        head += f"; station {_rc(d['station'])}; docks " + ", ".join(_rc(c) for c in d["docks"])
    return head


def _state_lbf(d: Mapping[str, Any]) -> str:
    agents = ", ".join(f"{a['id']} {_rc(a['pos'])} L{a['level']}" for a in d["agents"])
    food = ", ".join(
        f"{f['id']} -" if f["pos"] is None else f"{f['id']} {_rc(f['pos'])} L{f['level']}" for f in d["food"]
    )
    return f"{agents} | {food}"


def _state_rware(d: Mapping[str, Any]) -> str:
    agents = ", ".join(f"{a['id']} {_rc(a['pos'])} {a['dir']} {a['carrying'] or '-'}" for a in d["agents"])
    requested = [s for s in d["shelves"] if s["requested"]]
    req = ", ".join(f"{s['id']} {_rc(s['pos'])}" for s in requested) or "-"
    return f"{agents} | req {req}"


def _state_spaceworld(d: Mapping[str, Any]) -> str:
    agents = ", ".join(
        f"{a['id']} {_rc(a['pos'])} {a['carrying'] or '-'}" + (f" disabled={a['disabled']}" if a["disabled"] else "")
        for a in d["agents"]
    )
    modules = ", ".join(
        f"{m['id']} delivered"
        if m["status"] == "delivered"
        else f"{m['id']} {_rc(m['pos'])} w{m['weight']} {m['status']}"
        for m in d["modules"]
    )
    moving = [f"{_rc(x['pos'])} {_DIRECTIONS.get((int(x['vel'][0]), int(x['vel'][1])), 'still')}" for x in d["debris"]]
    debris = ", ".join(moving) or "-"
    return f"{agents} | {modules} | debris {debris}"


_STATE = {"lbf": _state_lbf, "rware": _state_rware, "spaceworld": _state_spaceworld}


def displayed_rewards(
    reward_team: np.ndarray,
    team_reward: str = "true",
    *,
    noise_std: float = 0.0,
    noise_seed: int = 0,
    episode_id: int = 0,
) -> np.ndarray:
    """The team rewards the critic is shown for a whole episode (``float64[T]``).

    ``true``: unchanged; ``delayed``: the episode's total at its last step, 0 elsewhere;
    ``noisy``: plus Gaussian noise of std ``noise_std`` drawn from ``(noise_seed, episode_id)``,
    so every window of an episode sees the same noise.
    """
    r = np.asarray(reward_team, np.float64).reshape(-1)  # [T]
    if team_reward == "true":
        return r.copy()
    if team_reward == "delayed":
        out = np.zeros_like(r)
        if r.size:
            out[-1] = r.sum()
        return out
    if team_reward == "noisy":
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
        rng = np.random.default_rng([noise_seed % 2**63, episode_id % 2**63])
        noisy: np.ndarray = r + rng.normal(0.0, noise_std, size=r.shape)
        return noisy
    raise ValueError(f"team_reward must be one of {', '.join(TEAM_REWARD_MODES)}, got {team_reward!r}")


def render_episode(
    env_id: str,
    describes: Sequence[Mapping[str, Any]],
    actions: np.ndarray,
    reward_team: np.ndarray,
    *,
    episode_id: int,
    t0: int = 0,
    team_reward: str = "true",
    noise_std: float = 0.0,
    noise_seed: int = 0,
    reward_episode: np.ndarray | None = None,
) -> RenderedEpisode:
    """Render steps ``t0 .. t0 + T - 1`` of an episode as one line per timestep.

    Args:
        env_id: the env id (selects the family's line format and action names).
        describes: ``describe()`` of each step of the window, before its action (length T).
        actions: joint actions of the window, ``int[T, N]``.
        reward_team: team rewards of the window, ``float[T]``.
        episode_id: the dataset episode id (labels the episode and seeds the noise).
        t0: the episode step of the window's first line.
        team_reward: ``true``, ``delayed`` or ``noisy`` (stress variants; only the shown
            rewards change, see ``displayed_rewards``).
        noise_std: std of the ``noisy`` variant.
        noise_seed: seed of the ``noisy`` variant.
        reward_episode: the team rewards of the whole episode ``float[T_episode]`` when this
            window is part of a longer episode and ``team_reward`` is not ``true``; by default
            the window is taken to be the whole episode.

    Raises:
        ValueError: the inputs disagree in length or agent count, or an action is out of range.
    """
    family = _family(env_id)
    acts = np.asarray(actions)  # [T, N]
    rew = np.asarray(reward_team, np.float64).reshape(-1)  # [T]
    length = len(describes)
    if acts.ndim != 2 or acts.shape[0] != length or rew.shape[0] != length:
        raise ValueError(
            f"render_episode: {length} describes, actions of shape {acts.shape}, {rew.shape[0]} rewards; "
            "expected T describes, actions [T, N] and T rewards"
        )
    if t0 < 0:
        raise ValueError(f"render_episode: t0 must be >= 0, got {t0}")
    names = env_spec(env_id).action_names
    if acts.size and (acts.min() < 0 or acts.max() >= len(names)):
        raise ValueError(f"render_episode: actions must be in 0..{len(names) - 1} for {env_id}")
    if reward_episode is None:
        shown = displayed_rewards(rew, team_reward, noise_std=noise_std, noise_seed=noise_seed, episode_id=episode_id)
    else:
        full = np.asarray(reward_episode, np.float64).reshape(-1)  # [T_episode]
        if full.shape[0] < t0 + length or not np.allclose(full[t0 : t0 + length], rew):
            raise ValueError("render_episode: reward_episode[t0:t0+T] must equal reward_team")
        shown = displayed_rewards(full, team_reward, noise_std=noise_std, noise_seed=noise_seed, episode_id=episode_id)[
            t0 : t0 + length
        ]
    state = _STATE[family]
    lines = []
    for k, d in enumerate(describes):
        agent_ids = [a["id"] for a in d["agents"]]
        if len(agent_ids) != acts.shape[1]:
            raise ValueError(
                f"render_episode: step {t0 + k} describes {len(agent_ids)} agents, actions have {acts.shape[1]}"
            )
        r = round(float(shown[k]), 2) + 0.0  # + 0.0 turns -0.0 into 0.0
        joint = " ".join(f"{a}={names[int(i)]}" for a, i in zip(agent_ids, acts[k], strict=True))
        lines.append(f"t={t0 + k} r={r:.2f} | {state(d)} | act {joint}")
    header = _header(family, describes[0]) if length else ""
    return RenderedEpisode(episode_id=episode_id, t0=t0, length=length, lines=tuple(lines), header=header)


def windows(length: int, max_steps: int) -> list[tuple[int, int]]:
    """Split ``length`` steps into consecutive ``(t0, t1)`` windows of at most ``max_steps``.

    The windows are as even as possible (no tiny last window); ``[]`` for ``length == 0``.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    count = -(-length // max_steps)
    bounds = [round(i * length / count) for i in range(count + 1)] if count else [0]
    return [(bounds[i], bounds[i + 1]) for i in range(count)]


# -------------------------------------------------------------------------------------- messages


def _fields(env_id: str, agent_ids: Sequence[str], n_tasks: int | None) -> dict[str, Any]:
    task_range = f"0..{n_tasks - 1}" if n_tasks else "0, 1, ..."
    return {
        "agents": ", ".join(agent_ids),
        "n_agents": len(agent_ids),
        "target": TASK_TARGETS[_family(env_id)],
        "task_range": task_range,
    }


def _static_parts(
    env_id: str, critic: str, agent_ids: Sequence[str], n_tasks: int | None, template_dir: Path | None
) -> tuple[str, str]:
    texts = _read_templates(env_id, critic, template_dir)
    fields = _fields(env_id, agent_ids, n_tasks)
    try:
        env, desc, lines, defn, task = (texts[n].format(**fields).strip() for n in _template_names(env_id, critic))
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"a prompt template for {env_id}/{critic} does not render: {err!r}") from err
    return f"{env}\n\n{desc}\n{lines}\n\n{defn}", task


def static_prompt(
    env_id: str,
    critic: str,
    agent_ids: Sequence[str],
    n_tasks: int | None = None,
    *,
    template_dir: Path | None = None,
) -> str:
    """The request-independent text of a prompt (system message + ``p_task``), for size estimates."""
    system, task = _static_parts(env_id, critic, agent_ids, n_tasks, template_dir)
    return f"{system}\n\n{task}"


def build_messages(
    env_id: str,
    critic: str,
    episodes: Sequence[RenderedEpisode],
    agent_ids: tuple[str, ...],
    n_tasks: int | None,
    *,
    template_dir: Path | None = None,
    cue: str | None = None,
) -> list[dict[str, str]]:
    """The chat messages of one request: static system message, then task, episodes and cue.

    One episode asks for the single reply format, several for the batch format; the shares form
    passes its own ``cue`` (``shares.shares_cue``).
    """
    if not episodes:
        raise ValueError("build_messages: no episodes")
    system, task = _static_parts(env_id, critic, agent_ids, n_tasks, template_dir)
    blocks = []
    for ep in episodes:
        last = ep.t0 + ep.length - 1
        label = f"EPISODE {ep.episode_id} ({ep.length} timesteps, t={ep.t0}..{last}): {ep.header}"
        blocks.append("\n".join((label, *ep.lines)))
    what = "credits" + (" and tasks" if critic == "llm-taca" else "")
    order = ", ".join(agent_ids)
    if cue is not None:
        pass
    elif len(episodes) == 1:
        cue = (
            f'Answer now with one JSON object {{"agents": [...], "summary": ...}}: agents {order} in this order, '
            f"each with a rationale, then {episodes[0].length} {what} (one per timestep)."
        )
    else:
        ids = ", ".join(str(ep.episode_id) for ep in episodes)
        cue = (
            f'Answer now with one JSON object {{"episodes": [...]}}: episodes {ids} in this order; in each, '
            f"agents {order} in this order, each with a rationale, then one of each of its {what} per timestep."
        )
    user = "\n\n".join((task, *blocks, cue))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def estimate_tokens(text: str) -> int:
    """Rough token count for ``--dry-run`` costs: ``ceil(len(text) / 3.5)``.

    Large BPE vocabularies average 3.5–4.5 characters per token on English. Small ones split
    digits: SmolLM2's tokenizer gives about 2.9 characters per token on the static prompt and 2.3
    on timestep lines, so for the embedded model this estimate is 20–35% low (size windows with
    that margin).
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def max_tokens_for(n_agents: int, lengths: Sequence[int], with_tasks: bool) -> int:
    """A ``max_tokens`` that fits a (grammar-constrained) reply for these episodes.

    Per episode: ``N × T`` numbers (``CREDIT_TOKENS`` each, plus ``TASK_TOKENS`` with tasks), a
    rationale per agent and a summary at their longest allowed length (``reply``'s bounds), and
    JSON structure; plus 10% and 32 tokens of slack.
    """
    rationale = math.ceil(RATIONALE_MAX_CHARS / CHARS_PER_TOKEN)
    summary = math.ceil(SUMMARY_MAX_CHARS / CHARS_PER_TOKEN)
    per_number = CREDIT_TOKENS + (TASK_TOKENS if with_tasks else 0)
    total = 0
    for length in lengths:
        total += n_agents * (length * per_number + rationale + STRUCTURE_TOKENS) + summary + STRUCTURE_TOKENS
    return math.ceil(total * 1.1) + 32
