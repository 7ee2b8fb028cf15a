"""The running command's Client, made by the root callback in cli/__init__.py and closed when the command ends."""

from __future__ import annotations

import click


def current_client():
    """The Client of the command being run (one per command: one store connection, settings read once)."""
    return click.get_current_context().find_root().obj["client"]
