"""One client per command: the store connection, the project settings and the backends it built.

    from orchestrator.client import Client
    with Client() as dl:
        run = api.show("mnist-20261125-1930-a1b2", client=dl)

A Client opens the store under DL_HOME on first use and keeps that one connection until
``close()`` (or the end of the ``with`` block), reads dl.toml once, and builds each backend once
(a backend keeps its own cloud clients). The CLI makes one per command; every ``api`` function
takes ``client=`` and, without one, makes its own and closes it before returning. Nothing here
is shared between Clients, so a script that changes the environment between two Clients gets
fresh settings and fresh cloud clients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from orchestrator import config
from orchestrator.backends import Backend, backend_class
from orchestrator.settings import dl_home
from orchestrator.store import Store


class Client:
    """A command's (or a script's) view of dl. ``home``: DL_HOME (default: the environment's)."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else dl_home()
        self._store: Store | None = None
        self._config: config.ConfigFile | None = None
        self._backends: dict[str, Backend] = {}

    @property
    def store(self) -> Store:
        """The run database, opened (created and migrated) on first use; the same connection after."""
        if self._store is None:
            self._store = Store(self.home)
        return self._store

    def settings(self, cli: Mapping[str, object] | None = None) -> config.Settings:
        """The project settings with ``cli`` (flags, as for config.load_settings) on top. dl.toml is
        found and read once per Client; resolving again reads only the environment."""
        if self._config is None:
            self._config = config.read_config()
        return config.load_settings(cli, file=self._config)

    def backend(self, target: str) -> Backend:
        """The backend registered as ``target``, built once per Client with this Client's settings."""
        if target not in self._backends:
            self._backends[target] = backend_class(target)(settings=self.settings)
        return self._backends[target]

    def close(self) -> None:
        """Close the store connection (the last one to close checkpoints SQLite's WAL into dl.db).
        Safe to call twice; the Client opens a new connection if it is used again."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def using(client: Client | None) -> Iterator[Client]:
    """``client`` itself (left open: its owner closes it), or a new Client closed on leaving."""
    if client is not None:
        yield client
        return
    with Client() as made:
        yield made
