"""Replace one `## TITLE` section of bench/RESULTS.md, leaving the others as they are.

Each benchmark script writes its own section; they share this one way of doing it.
"""

from __future__ import annotations

from pathlib import Path


def replace_section(results: Path, title: str, lines: list[str]) -> None:
    """Write `lines` (starting with `title`) in place of that section, or append them."""
    text = results.read_text() if results.is_file() else "# Benchmark results\n"
    start = text.find(title)
    if start == -1:
        text = text.rstrip() + "\n\n" + "\n".join(lines)
    else:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + "\n".join(lines) + (text[end + 1 :] if end != -1 else "")
    results.write_text(text)
