"""Where training and evaluation run: ``resolve_device`` turns a config's device into a torch one.

A leaf module (it imports torch only), so that ``training``, ``evaluate``, the d3rlpy runners,
the online loop and the leaderboard share one rule without importing each other.
"""

from __future__ import annotations

import torch


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda:0`` when CUDA is present, else ``cpu``; anything else unchanged.

    On CPU torch is set to one thread (more are 3–20× slower on a busy 2-core machine). The
    explicit index in ``cuda:0`` is what d3rlpy expects (torch takes ``cuda`` and ``cuda:0`` alike).
    """
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)
    return device
