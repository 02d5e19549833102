"""Views of a built dataset for training (installed as ``llmca_data.loaders``).

``datasets``, polars/Arrow, torch tensors and d3rlpy ``MDPDataset``s. Input: a dataset
directory or Hub repo. Output: frames and tensors. Imports the core and ``annotation``.
"""

from llmca_data.loaders.arrays import (
    CREDIT_SCALES,
    TEAM_REWARDS,
    CreditScale,
    TeamReward,
    delay_to_episode_end,
    normalize_credits,
    rescale_credits,
    sample_batch,
    scale_per_episode,
)
from llmca_data.loaders.offline import OfflineDataset

__all__ = [
    "CREDIT_SCALES",
    "TEAM_REWARDS",
    "CreditScale",
    "OfflineDataset",
    "TeamReward",
    "delay_to_episode_end",
    "normalize_credits",
    "rescale_credits",
    "sample_batch",
    "scale_per_episode",
]
