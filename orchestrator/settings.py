"""Where dl keeps its state, and the few knobs that environment variables set.

``DL_HOME`` relocates everything (database, packages, local runs). The default
is the per-user data folder (``$XDG_DATA_HOME/dl`` or ``~/.local/share/dl``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

DEFAULT_MAX_PACKAGE_MB = 100.0


def dl_home() -> Path:
    explicit = os.environ.get("DL_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dl"


def max_package_mb() -> float:
    from orchestrator.errors import UsageError

    raw = os.environ.get("DL_MAX_PACKAGE_MB", "")
    if not raw:
        return DEFAULT_MAX_PACKAGE_MB
    hint = "Set it to a size in MB, e.g. 200."
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"DL_MAX_PACKAGE_MB={raw!r} is not a number.", hint) from None
    if not math.isfinite(value) or value <= 0:  # nan compares false with every limit: it would turn it off
        raise UsageError(f"DL_MAX_PACKAGE_MB={raw!r} is not a size in MB (a number above 0).", hint)
    return value


TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def parse_bool(text: str) -> bool | None:
    """``True`` or ``False`` for the words dl reads as a boolean anywhere (job parameters, settings,
    DL_DEBUG), any case; ``None`` for any other text, which each caller reports in its own words.
    The runtime (runtime/dl_entry.py) keeps a copy of the two word sets, pinned by a test."""
    word = text.lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def debug_enabled() -> bool:
    return parse_bool(os.environ.get("DL_DEBUG", "")) is True
