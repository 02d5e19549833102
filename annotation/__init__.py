"""Critics that split the team reward into per-agent, per-timestep credits (installed as ``llmca_data.annotation``).

LLM critics (``llm-mca``, ``llm-taca``) and exact reference critics (``counterfactual``,
``shapley``, ``uniform``), plus credit-quality metrics. Input: a dataset directory.
Output: ``credit_<critic>`` step columns and ``annotations`` rows. Imports only the core.
"""
