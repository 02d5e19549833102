"""Spaceworld observations and global states, computed for B environments at once.

Input: a ``VectorSpaceworld`` (its ``SpaceworldState`` arrays and static layout). Output:
per-agent observations ``float32[B, N, obs_dim]`` and global states ``float32[B, state_dim]``,
column for column as named by ``layout.obs_feature_names`` / ``layout.state_feature_names``.
Every block is written in place into one preallocated array through reshaped views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from llmca_data.envs.spaceworld.layout import DIR_VEC

if TYPE_CHECKING:
    from llmca_data.envs.spaceworld.core import VectorSpaceworld

FloatArray = npt.NDArray[np.float32]

_VEL = DIR_VEC.astype(np.float32)  # [5, 2] velocity of each direction code


class Observer:
    """Builds observations and states from a ``VectorSpaceworld``'s current arrays."""

    def __init__(self, env: VectorSpaceworld) -> None:
        cfg = env.config
        self.env = env
        n, m, d = cfg.n_agents, cfg.n_modules, cfg.n_debris
        self.n, self.m, self.d = n, m, d
        self.inv_t = np.float32(1.0 / cfg.max_steps)
        self.inv_dis = np.float32(1.0 / max(cfg.disable_steps, 1))
        self.heavy = (cfg.weights == 2).astype(np.float32)  # [M]
        self.mods = np.arange(m)[None, :, None]  # [1, M, 1]
        lay = env.layout
        self.prow = np.ascontiguousarray(lay.pos_norm[:, 0])  # [C]
        self.pcol = np.ascontiguousarray(lay.pos_norm[:, 1])  # [C]
        self.dock_r = np.ascontiguousarray(lay.dock_rel[:, 0])  # [C]
        self.dock_c = np.ascontiguousarray(lay.dock_rel[:, 1])  # [C]
        self.visible = lay.visible.ravel()  # [C * C]
        # others[i] = the other agents of i in increasing id order.
        self.others = np.array([[j for j in range(n) if j != i] for i in range(n)], dtype=np.int64).reshape(n, n - 1)
        # Column offsets of each block.
        self.o_other = 5
        self.o_mod = self.o_other + 4 * (n - 1)
        self.o_dock = self.o_mod + 7 * m
        self.o_deb = self.o_dock + 2
        self.obs_dim = self.o_deb + 5 * d
        self.s_mod = 1 + 4 * n
        self.s_deb = self.s_mod + (6 + n) * m
        self.state_dim = self.s_deb + 4 * d

    def obs(self) -> FloatArray:
        """``float32[B, N, obs_dim]``."""
        e, s = self.env, self.env.s
        n, m, d = self.n, self.m, self.d
        b = s.agent_cell.shape[1]
        out = np.empty((b, n, self.obs_dim), dtype=np.float32)
        pr, pc = np.take(self.prow, s.agent_cell), np.take(self.pcol, s.agent_cell)  # [N, B]
        carrying = s.carrying >= 0  # [N, B]
        dis = s.disabled * self.inv_dis  # [N, B]
        out[:, :, 0] = (s.t * self.inv_t)[:, None]
        out[:, :, 1] = pr.T
        out[:, :, 2] = pc.T
        out[:, :, 3] = carrying.T
        out[:, :, 4] = dis.T
        if n > 1:
            blk = out[:, :, self.o_other : self.o_mod].reshape(b, n, n - 1, 4)
            o = self.others  # [N, N-1]
            blk[..., 0] = (pr[o] - pr[:, None, :]).transpose(2, 0, 1)
            blk[..., 1] = (pc[o] - pc[:, None, :]).transpose(2, 0, 1)
            blk[..., 2] = carrying[o].transpose(2, 0, 1)
            blk[..., 3] = dis[o].transpose(2, 0, 1)
        blk = out[:, :, self.o_mod : self.o_dock].reshape(b, n, m, 7)
        status = s.mod_status  # [M, B]
        present = (status != 2).astype(np.float32)  # [M, B]; delivered modules have no position
        mr, mc = np.take(self.prow, s.mod_cell) * present, np.take(self.pcol, s.mod_cell) * present  # [M, B]
        blk[..., 0] = (mr[None] - pr[:, None, :] * present[None]).transpose(2, 0, 1)
        blk[..., 1] = (mc[None] - pc[:, None, :] * present[None]).transpose(2, 0, 1)
        blk[..., 2] = self.heavy
        blk[..., 3] = (status == 0).T[:, None, :]
        mine = s.carrying[:, None, :] == self.mods  # [N, M, B]
        blk[..., 4] = mine.transpose(2, 0, 1)
        blk[..., 5] = ((status == 1)[None] & ~mine).transpose(2, 0, 1)
        blk[..., 6] = (status == 2).T[:, None, :]
        out[:, :, self.o_dock] = np.take(self.dock_r, s.agent_cell).T
        out[:, :, self.o_dock + 1] = np.take(self.dock_c, s.agent_cell).T
        if d:
            blk = out[:, :, self.o_deb :].reshape(b, n, d, 5)
            cells = e.layout.n_cells
            vis = np.take(self.visible, s.agent_cell[:, None, :] * cells + s.deb_cell[None]).astype(np.float32)
            blk[..., 0] = vis.transpose(2, 0, 1)  # vis: [N, D, B]
            dr, dc = np.take(self.prow, s.deb_cell), np.take(self.pcol, s.deb_cell)  # [D, B]
            blk[..., 1] = ((dr[None] - pr[:, None, :]) * vis).transpose(2, 0, 1)
            blk[..., 2] = ((dc[None] - pc[:, None, :]) * vis).transpose(2, 0, 1)
            blk[..., 3] = (np.take(_VEL[:, 0], s.deb_dir)[None] * vis).transpose(2, 0, 1)
            blk[..., 4] = (np.take(_VEL[:, 1], s.deb_dir)[None] * vis).transpose(2, 0, 1)
        return out

    def state(self) -> FloatArray:
        """``float32[B, state_dim]``."""
        s = self.env.s
        n, m, d = self.n, self.m, self.d
        b = s.agent_cell.shape[1]
        out = np.empty((b, self.state_dim), dtype=np.float32)
        out[:, 0] = s.t * self.inv_t
        blk = out[:, 1 : self.s_mod].reshape(b, n, 4)
        blk[..., 0] = np.take(self.prow, s.agent_cell).T
        blk[..., 1] = np.take(self.pcol, s.agent_cell).T
        blk[..., 2] = (s.carrying >= 0).T
        blk[..., 3] = (s.disabled * self.inv_dis).T
        blk = out[:, self.s_mod : self.s_deb].reshape(b, m, 6 + n)
        blk[..., 0] = np.take(self.prow, s.mod_cell).T
        blk[..., 1] = np.take(self.pcol, s.mod_cell).T
        blk[..., 2] = self.heavy
        for k in range(3):
            blk[..., 3 + k] = (s.mod_status == k).T
        blk[..., 6:] = (s.carrying[None] == self.mods.reshape(m, 1, 1)).transpose(2, 0, 1)  # [M, N, B] -> [B, M, N]
        if d:
            blk = out[:, self.s_deb :].reshape(b, d, 4)
            blk[..., 0] = np.take(self.prow, s.deb_cell).T
            blk[..., 1] = np.take(self.pcol, s.deb_cell).T
            blk[..., 2] = np.take(_VEL[:, 0], s.deb_dir).T
            blk[..., 3] = np.take(_VEL[:, 1], s.deb_dir).T
        return out
