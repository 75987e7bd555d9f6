"""The only room that sequences stages: training (+ its optimize: section), exporting with the
accuracy-budget ladder, packaging a run that was never exported, tuning, the pytest plugin.

The CLI and the Python API both call these; the stages themselves never call each other.
"""
