"""Env ids: one parser and its inverse.

Grammar (contract ids of DESIGN.md §2 are instances of it):

* ``lbf-<W>x<H>-<P>p-<F>f[-coop]`` → Level-Based Foraging, full observation, 50 steps
* ``rware-<size>-<N>ag`` with size in tiny/small/medium/large → Robotic Warehouse, 500 steps
* ``spaceworld-<W>x<H>-<N>a`` → our Spaceworld
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmca_data.errors import UnknownEnvError

CONTRACT_ENV_IDS: tuple[str, ...] = (
    "lbf-8x8-2p-2f",
    "lbf-8x8-2p-2f-coop",
    "lbf-10x10-3p-3f",
    "rware-tiny-2ag",
    "rware-small-4ag",
    "spaceworld-10x10-3a",
)

_LBF = re.compile(r"^lbf-(\d+)x(\d+)-(\d+)p-(\d+)f(-coop)?$")
_RWARE = re.compile(r"^rware-(tiny|small|medium|large)-(\d+)ag$")
_SPACE = re.compile(r"^spaceworld-(\d+)x(\d+)-(\d+)a$")


@dataclass(frozen=True)
class EnvId:
    """A parsed env id. ``str(EnvId.parse(s)) == s`` for every valid ``s``."""

    family: str
    """``lbf``, ``rware`` or ``spaceworld``."""
    width: int = 0
    height: int = 0
    size: str = ""
    """RWARE layout size name."""
    n_agents: int = 0
    n_food: int = 0
    coop: bool = False

    @classmethod
    def parse(cls, env_id: str) -> EnvId:
        if m := _LBF.match(env_id):
            w, h, p, f, coop = m.groups()
            return cls("lbf", width=int(w), height=int(h), n_agents=int(p), n_food=int(f), coop=bool(coop))
        if m := _RWARE.match(env_id):
            return cls("rware", size=m.group(1), n_agents=int(m.group(2)))
        if m := _SPACE.match(env_id):
            w, h, n = m.groups()
            return cls("spaceworld", width=int(w), height=int(h), n_agents=int(n))
        raise UnknownEnvError(
            f"unknown env id {env_id!r}: expected one of {', '.join(CONTRACT_ENV_IDS)} "
            "(or the same patterns with other sizes); run `llmca envs` to list them"
        )

    def __str__(self) -> str:
        if self.family == "lbf":
            return f"lbf-{self.width}x{self.height}-{self.n_agents}p-{self.n_food}f" + ("-coop" if self.coop else "")
        if self.family == "rware":
            return f"rware-{self.size}-{self.n_agents}ag"
        return f"spaceworld-{self.width}x{self.height}-{self.n_agents}a"

    @property
    def gym_id(self) -> str | None:
        """The wrapped gymnasium id, or None for our own envs."""
        if self.family == "lbf":
            return (
                f"Foraging-{self.width}x{self.height}-{self.n_agents}p-{self.n_food}f"
                + ("-coop" if self.coop else "")
                + "-v3"
            )
        if self.family == "rware":
            return f"rware-{self.size}-{self.n_agents}ag-v2"
        return None
