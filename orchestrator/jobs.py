"""Trainjobs: folders with a job.toml, a LightningModule and a LightningDataModule.

A job.toml declares the classes (``module:Class``), the metric that picks the
best checkpoint, and every hyperparameter with its type, default and help. It is
read without importing the job's code, so ``dl jobs`` and ``--set`` validation
cost nothing, and the same declarations drive the runtime's argument parser.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import JobError, ParamError
from orchestrator.settings import parse_bool

JOB_FILE = "job.toml"
_TYPES = {"int", "float", "str", "bool", "batches", "workers"}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: object
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None

    def parse(self, raw: str) -> object:
        """Turn a command-line string into a typed, range-checked value."""
        text = raw.strip()
        try:
            if self.type == "int":
                value: object = int(text)
            elif self.type == "float":
                value = float(text)
                if not math.isfinite(value):
                    raise ValueError(text)
            elif self.type == "batches":
                value = float(text) if any(c in text for c in ".eE") else int(text)
                if isinstance(value, float) and not 0.0 <= value <= 1.0:
                    raise ValueError(text)
            elif self.type == "workers":
                value = "auto" if text.lower() == "auto" else int(text)
            elif self.type == "bool":
                value = parse_bool(text)
                if value is None:
                    raise ValueError(text)
            else:
                value = text
        except ValueError:
            raise ParamError(
                f"Parameter {self.name} expects {_article(self.type)}, got {raw!r}.",
                f"Example: --set {self.name}={self.default}",
            ) from None
        return self.check(value)

    def check(self, value: object) -> object:
        if self.choices is not None and value not in self.choices:
            options = ", ".join(map(str, self.choices))
            raise ParamError(f"Parameter {self.name} must be one of {options}; got {value!r}.")
        if self.min is not None and isinstance(value, (int, float)) and value < self.min:
            raise ParamError(f"Parameter {self.name} must be >= {self.min}; got {value}.")
        if self.max is not None and isinstance(value, (int, float)) and value > self.max:
            raise ParamError(f"Parameter {self.name} must be <= {self.max}; got {value}.")
        return value

    def to_json(self) -> dict:
        out = {"name": self.name, "type": self.type, "default": self.default, "help": self.help}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out


def _article(type_name: str) -> str:
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "batches": "a batch count (int) or a fraction between 0.0 and 1.0",
        "workers": "a worker count (int) or auto",
    }.get(type_name, "a string")


# Parameters every job has: the runtime gives them to Lightning's Trainer.
# A job's [trainer] table changes their defaults.
TRAINER_PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("max_epochs", "int", 10, "Epochs to train", min=1),
        Param("seed", "int", 0, "Random seed (seed_everything, workers too)"),
        Param("precision", "str", "32-true", "Lightning precision", ("32-true", "16-mixed", "bf16-mixed")),
        Param(
            "num_workers",
            "workers",
            0,
            "DataLoader worker processes for the data module; auto: the instance's CPUs per GPU, less one",
            min=0,
        ),
        Param("limit_train_batches", "batches", 1.0, "Train batches per epoch: a count or a fraction"),
        Param("limit_val_batches", "batches", 1.0, "Validation batches per epoch: a count or a fraction"),
        Param("fast_dev_run", "bool", False, "Run one train and one validation batch, then stop (smoke test)"),
        Param("init_optimizer", "bool", False, "With --from: restore the optimizer state as well as the weights"),
    )
}

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Job:
    name: str
    path: Path
    description: str
    model: str
    datamodule: str
    monitor: str | None
    mode: str
    params: dict[str, Param]
    trainer: dict[str, Param] = field(default_factory=dict)
    # DDP with find_unused_parameters on several GPUs or nodes: for models whose parameters do
    # not all get gradients in every step (frozen, then unfrozen blocks).
    find_unused_parameters: bool = False
    # The kind of job and the program the container runs (orchestrator/scripts.py has the other kind).
    kind = "trainjob"
    entry_point = "dl_entry.py"

    @property
    def ref(self) -> str:
        """What :func:`find_job` finds this job by again: its folder."""
        return str(self.path)

    @property
    def all_params(self) -> dict[str, Param]:
        return {**self.params, **self.trainer}

    def resolve(self, overrides: dict[str, str] | None = None) -> dict[str, object]:
        """Defaults plus ``--set`` overrides, typed and validated. Unknown keys fail."""
        spec = self.all_params
        values = {name: p.default for name, p in spec.items()}
        for key, raw in (overrides or {}).items():
            if key not in spec:
                close = difflib.get_close_matches(key, spec, n=1)
                hint = f"Did you mean {close[0]!r}? " if close else ""
                raise ParamError(
                    f"Unknown parameter {key!r} for job {self.name}.",
                    f"{hint}Run `dl jobs {self.name}` to see its parameters.",
                )
            values[key] = spec[key].parse(raw)
        return values

    def smoke_params(self, params: dict[str, object]) -> dict[str, object]:
        """The parameters of the dry run's smoke test: one train and one validation batch."""
        return {**params, "fast_dev_run": True}

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "description": self.description,
            "model": self.model,
            "datamodule": self.datamodule,
            "monitor": self.monitor,
            "mode": self.mode,
            "find_unused_parameters": self.find_unused_parameters,
            "params": [p.to_json() for p in self.params.values()],
            "trainer": [p.to_json() for p in self.trainer.values()],
        }


def load_job(path: Path) -> Job:
    """Read and validate ``path/job.toml``."""
    import tomllib

    toml_path = path / JOB_FILE
    where = f"{toml_path}"
    try:
        doc = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(
            f"{path} has no {JOB_FILE}.", "A trainjob folder needs one; see README, 'Add a trainjob'."
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobError(f"{where} is not valid TOML: {exc}.", "Fix the file and try again.") from exc

    for table in ("job", "params", "trainer"):
        if not isinstance(doc.get(table, {}), dict):
            raise JobError(f"{where}: [{table}] must be a table.", "See README, 'Add a trainjob'.")
    meta = doc.get("job", {})
    for key in ("model", "datamodule"):
        value = meta.get(key)
        if not isinstance(value, str) or not re.match(r"^[\w.]+:[A-Za-z_]\w*$", value):
            raise JobError(f"{where}: [job] {key} must be 'module:Class', got {value!r}.")
    mode = meta.get("mode", "min")
    if mode not in ("min", "max"):
        raise JobError(f"{where}: [job] mode must be 'min' or 'max', got {mode!r}.")
    find_unused = meta.get("find_unused_parameters", False)
    if not isinstance(find_unused, bool):
        raise JobError(f"{where}: [job] find_unused_parameters must be true or false, got {find_unused!r}.")

    params: dict[str, Param] = {}
    for name, decl in doc.get("params", {}).items():
        params[name] = _param_from_toml(where, name, decl)
        if name in TRAINER_PARAMS:
            raise JobError(f"{where}: parameter {name!r} clashes with the runtime's own trainer parameter.")
    trainer: dict[str, Param] = dict(TRAINER_PARAMS)
    for name, default in doc.get("trainer", {}).items():
        if name not in TRAINER_PARAMS:
            raise JobError(f"{where}: [trainer] {name!r} is not one of {', '.join(TRAINER_PARAMS)}.")
        base = TRAINER_PARAMS[name]
        try:
            checked = base.check(_coerce(base, default))
        except (ParamError, TypeError) as exc:
            raise JobError(f"{where}: [trainer] {name}: {exc}") from None
        trainer[name] = Param(base.name, base.type, checked, base.help, base.choices, base.min, base.max)

    name = meta.get("name", path.name)
    return Job(
        name=name,
        path=path,
        description=meta.get("description", ""),
        model=meta["model"],
        datamodule=meta["datamodule"],
        monitor=meta.get("monitor"),
        mode=mode,
        params=params,
        trainer=trainer,
        find_unused_parameters=find_unused,
    )


def _coerce(param: Param, value: object) -> object:
    if param.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = {"int": int, "float": float, "str": str, "bool": bool, "batches": (int, float), "workers": (int, str)}
    if (
        not isinstance(value, expected[param.type])
        or (param.type != "bool" and isinstance(value, bool))
        or (param.type == "workers" and isinstance(value, str) and value != "auto")
    ):
        raise TypeError(f"default {value!r} is not {_article(param.type)}")
    return value


def _param_from_toml(where: str, name: str, decl: object) -> Param:
    if not _NAME.match(name):
        raise JobError(f"{where}: parameter name {name!r} must be a Python identifier.")
    if not isinstance(decl, dict) or "type" not in decl or "default" not in decl:
        raise JobError(f"{where}: [params.{name}] needs a type and a default.")
    type_name = decl["type"]
    if type_name not in _TYPES:
        raise JobError(f"{where}: [params.{name}] type must be one of {', '.join(sorted(_TYPES))}.")
    choices = decl.get("choices")
    param = Param(
        name=name,
        type=type_name,
        default=None,
        help=decl.get("help", ""),
        choices=tuple(choices) if choices is not None else None,
        min=decl.get("min"),
        max=decl.get("max"),
    )
    try:
        default = param.check(_coerce(param, decl["default"]))
    except (ParamError, TypeError) as exc:
        raise JobError(f"{where}: [params.{name}] {exc}") from None
    return Param(name, type_name, default, param.help, param.choices, param.min, param.max)


# -- finding jobs ---------------------------------------------------------------


def job_roots(cwd: Path | None = None) -> list[Path]:
    """Folders searched for jobs, first match wins.

    1. every folder in ``DL_JOBS_PATH`` (os.pathsep-separated);
    2. the nearest ``trainjobs/`` folder walking up from the current folder;
    3. the ``trainjobs/`` folder of the dl checkout this package runs from.
    """
    roots: list[Path] = []
    for entry in os.environ.get("DL_JOBS_PATH", "").split(os.pathsep):
        if entry:
            roots.append(Path(entry).expanduser().resolve())
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "trainjobs"
        if candidate.is_dir():
            roots.append(candidate)
            break
    bundled = Path(__file__).resolve().parent.parent / "trainjobs"
    if bundled.is_dir():
        roots.append(bundled)
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def list_jobs(cwd: Path | None = None, problems: list[JobError] | None = None) -> list[Job]:
    """Every job found, by name (first root wins). Broken job.toml files go to ``problems``
    when given (so that one broken job does not hide the others), else they raise."""
    seen: dict[str, Job] = {}
    for root in job_roots(cwd):
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if (child / JOB_FILE).is_file():
                try:
                    job = load_job(child)
                except JobError as exc:
                    if problems is None:
                        raise
                    problems.append(exc)
                    continue
                seen.setdefault(job.name, job)
    return sorted(seen.values(), key=lambda j: j.name)


def find_job(name_or_path: str, cwd: Path | None = None, root: str | None = None) -> Job:
    """A job by name (searched in :func:`job_roots`), by path to its folder, or by path to a Python
    script (a :class:`orchestrator.scripts.ScriptJob`; ``root``: its project folder)."""
    from orchestrator import scripts

    if scripts.is_script_ref(name_or_path) and not (Path(name_or_path).expanduser() / JOB_FILE).is_file():
        return scripts.load_script(name_or_path, root)
    if root is not None:
        raise JobError(f"--root is for scripts; {name_or_path} is a trainjob.", "Drop --root.")
    candidate = Path(name_or_path).expanduser()
    if os.sep in name_or_path or name_or_path.startswith(".") or (candidate / JOB_FILE).is_file():
        if (candidate / JOB_FILE).is_file():
            return load_job(candidate.resolve())
        raise JobError(f"{name_or_path} is not a trainjob folder (no {JOB_FILE}).", "Run `dl jobs` to list jobs.")
    for root in job_roots(cwd):
        folder = root / name_or_path
        if (folder / JOB_FILE).is_file():
            return load_job(folder)
    # A job may declare a name other than its folder's ([job] name).
    jobs = list_jobs(cwd, problems=[])
    for job in jobs:
        if job.name == name_or_path:
            return job
    close = difflib.get_close_matches(name_or_path, [j.name for j in jobs], n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    raise JobError(f"Unknown job {name_or_path!r}.", f"{hint}Run `dl jobs` to list jobs.")
