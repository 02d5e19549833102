"""Leaderboard: safe submissions, trusted evaluation, statistics (installed as ``llmca_data.leaderboard``).

Input: a submission directory. Output: verified results and rendered tables. May import
every other stage; nothing imports it.
"""
