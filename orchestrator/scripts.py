"""Script jobs: any Python training script, run unchanged (``dl launch train.py -- fit``).

The second kind of job beside trainjobs (orchestrator/jobs.py): the same typed launch options,
the same backends and the same container contract. What is packaged is the script's project:
the nearest folder above the script holding one of :data:`PROJECT_MARKERS`, else the script's
own folder (``root`` overrides). The runtime wrapper ``runtime/dl_script.py`` runs the script as
``__main__`` and, for a Lightning script, gives its Trainer what trainjobs get.

Everything here is read without importing the script: a missing file, a file that is not
Python and a syntax error are JobErrors before anything is packaged.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import JobError, ParamError

PROJECT_MARKERS = ("pyproject.toml", "setup.py", "requirements.txt", ".git")
WRAPPER = "dl_script.py"
# The hyperparameter that carries the words after `--` (a JSON list in one string, so that it
# reaches the wrapper whole under AWS's toolkit, which renders every value with str()).
ARGS_KEY = "dl_script_args"
# The hyperparameter that asks the wrapper for a smoke test (one train and one validation batch).
SMOKE_KEY = "dl_fast_dev_run"
_LIGHTNING = re.compile(r"^\s*(?:import|from)\s+(lightning|pytorch_lightning)\b", re.MULTILINE)


@dataclass(frozen=True)
class ScriptJob:
    """A script and its project. ``path``: the project folder (what is packaged); ``script``: the
    script's path inside it (posix); ``lightning``: the module it imports, or None."""

    name: str
    path: Path
    script: str
    lightning: str | None
    description: str = ""
    monitor: str | None = None
    mode: str = "min"
    params: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    find_unused_parameters: bool = False
    kind: str = "script"
    entry_point: str = WRAPPER

    @property
    def ref(self) -> str:
        """What :func:`orchestrator.jobs.find_job` finds this job by again: the script's path."""
        return str(self.path / self.script)

    @property
    def all_params(self) -> dict:
        return {}

    def resolve(self, overrides: dict[str, str] | None = None, args: list[str] | None = None) -> dict[str, object]:
        """The run's hyperparameters: ``--set`` pairs as given (each becomes ``--key value`` after
        the script's own arguments), and the words after ``--`` under :data:`ARGS_KEY`."""
        values: dict[str, object] = {}
        for key, raw in (overrides or {}).items():
            if key.startswith("dl_") or not re.fullmatch(r"[A-Za-z_][\w.-]*", key):
                raise ParamError(f"--set {key}={raw}: {key!r} is not an option name a script can take.",
                                 "Example: --set model.lr=0.01 (passed as --model.lr 0.01).")  # fmt: skip
            values[key] = raw
        values[ARGS_KEY] = json.dumps(list(args or []))
        return values

    def smoke_params(self, params: dict[str, object]) -> dict[str, object]:
        return {**params, SMOKE_KEY: True}

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": str(self.path), "script": self.script,
                "lightning": self.lightning}  # fmt: skip


def is_script_ref(ref: str) -> bool:
    """Whether a job reference names a script (a path ending in .py, or an existing file)."""
    return ref.endswith(".py") or Path(ref).expanduser().is_file()


def project_root(script: Path) -> Path:
    """The nearest folder above ``script`` holding a project marker, else the script's folder."""
    for folder in script.parents:
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
        if folder == Path(folder.anchor):
            break
    return script.parent


def load_script(ref: str, root: str | Path | None = None) -> ScriptJob:
    """The ScriptJob for the script at ``ref``; a JobError (one line) when it cannot be one."""
    script = Path(ref).expanduser().resolve()
    if not script.is_file():
        raise JobError(f"There is no script {ref}.", "Check the path; a trainjob is named without .py.")
    if script.suffix != ".py":
        raise JobError(f"{ref} is not a Python script (.py).", "dl launch takes a .py script or a trainjob.")
    try:
        source = script.read_text(encoding="utf-8")
        ast.parse(source, filename=str(script))
    except UnicodeDecodeError:
        raise JobError(f"{ref} is not a Python script (not UTF-8 text).", "Pass the .py file itself.") from None
    except SyntaxError as exc:
        raise JobError(
            f"{script.name}:{exc.lineno}: SyntaxError: {exc.msg}.", "Fix the script; nothing was launched."
        ) from None
    base = Path(root).expanduser().resolve() if root else project_root(script)
    if not base.is_dir():
        raise JobError(f"--root {root} is not a folder.", "Give the project folder that holds the script.")
    try:
        rel = script.relative_to(base).as_posix()
    except ValueError:
        raise JobError(f"{ref} is not inside --root {base}.", "Give a folder above the script.") from None
    if rel in (WRAPPER, "dl_entry.py", "dl_job.json"):
        raise JobError(f"{ref} clashes with a file dl adds to every package.", "Rename it.")
    found = _LIGHTNING.search(source)
    stem = script.stem
    name = stem if base.name in (stem, "") else f"{base.name}-{stem}"
    return ScriptJob(name=name, path=base, script=rel, lightning=found.group(1) if found else None)
