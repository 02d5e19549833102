"""Behaviour policies: scripted experts per env family, random, epsilon mixtures."""

from llmca_data.policies.base import EpsilonPolicy, Policy, RandomPolicy, random_legal_actions, scripted_policy

__all__ = ["EpsilonPolicy", "Policy", "RandomPolicy", "random_legal_actions", "scripted_policy"]
