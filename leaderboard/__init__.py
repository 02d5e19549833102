"""Leaderboard: safe submissions, trusted evaluation, statistics (installed as ``llmca_data.leaderboard``).

Input: a submission directory. Output: verified results and rendered tables. May import
every other stage; nothing imports it.

Modules, in the order of the flow (each docstring states its input and output):
``submission`` (the format, ``Problem``, ``SubmissionError``), ``architectures`` (the
allowlist), ``checkpoint`` (safetensors header checks by hand), ``identity`` (dataset
identities), ``assemble`` (``make_submission`` from our run directories), ``validate``
(``validate_submission``), ``evaluate`` (``evaluate_submission``), ``statistics`` (rliable
aggregates), ``render`` (markdown, HTML, plots). Import them directly; this package imports
nothing so that ``import llmca_data.leaderboard`` stays cheap.
"""
