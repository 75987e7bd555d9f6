"""CLI command modules; each exposes `register(app, guarded)` and is listed in toolkit.cli.app."""
