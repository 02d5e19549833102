"""The rendered leaderboard lists every entry with its IQM and interval, and its plots exist."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from llmca_data.leaderboard.render import fmt, fmt_interval, render
from llmca_data.leaderboard.statistics import StatsConfig

Known = dict[str, tuple[str, list[float]]]


def test_markdown_and_html_hold_every_entry(fake_results: Callable[..., Path], known: Known, tmp_path: Path) -> None:
    result = render(fake_results(known), tmp_path / "site", StatsConfig(reps=200))
    markdown, page = result.markdown.read_text(), result.html.read_text()
    (task,) = result.tasks
    assert len(task.entries) == len(known)
    for entry in task.entries:
        for text in (markdown, page):
            assert entry.name in text
            assert f"{fmt(entry.iqm)} {fmt_interval(entry.iqm_ci)}" in text
            assert f"{fmt(entry.mean)} ± {fmt(entry.std)}" in text
        if entry.poi is not None:
            assert f"{fmt(entry.poi)} {fmt_interval(entry.poi_ci)}" in markdown
    assert "lbf-8x8-2p-2f · expert (normalized_score)" in markdown
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 and all((result.html.parent / s).stat().st_size > 1000 for s in sources)
    assert all((result.markdown.parent / s).is_file() for s in re.findall(r"\]\(([^)]+\.png)\)", markdown))
    assert sorted(result.plots) == sorted(result.html.parent / s for s in sources)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.plots)
    stats = json.loads(result.statistics.read_text())
    assert stats["stats_config"]["reps"] == 200 and len(stats["tasks"][0]["entries"]) == 3


def test_rendering_is_reproducible_and_escapes_names(fake_results: Callable[..., Path], tmp_path: Path) -> None:
    entries = {"<script>x</script>": ("bc", [1.0, 2.0, 3.0, 4.0, 5.0])}
    results = fake_results(entries)
    first = render(results, tmp_path / "a", StatsConfig(reps=200))
    second = render(results, tmp_path / "b", StatsConfig(reps=200))
    assert first.markdown.read_text() == second.markdown.read_text()
    assert first.html.read_text() == second.html.read_text()
    assert "<script>" not in first.html.read_text() and "&lt;script&gt;" in first.html.read_text()
