"""dl runtime entry point: runs a trainjob under SageMaker's training-container contract.

SageMaker's toolkit (or dl's local backend, which reproduces it) runs this file as
``python dl_entry.py --key value ...`` from the extracted package. It reads the
contract (``SM_*`` variables, ``/opt/ml`` folders), builds the job's
LightningModule and LightningDataModule from ``dl_job.json``, and trains with:

- accelerator auto (CUDA when present), devices = SM_NUM_GPUS, nodes = len(SM_HOSTS);
- ModelCheckpoint into the checkpoint folder: ``last.ckpt`` plus ``best.ckpt`` by the job's
  monitored metric, each written atomically (temporary file, then rename);
- auto-resume from ``last.ckpt`` when it is there (a spot restart, ``dl resume``); a checkpoint
  that does not load is named, set aside, and the previous good one is used;
- per-epoch metrics in ``<SM_OUTPUT_DATA_DIR>/metrics.csv`` and one log line per epoch;
- the final weights and hyperparameters in ``<SM_MODEL_DIR>/model.ckpt``;
- SIGTERM (``dl stop``, SageMaker's StopTrainingJob): save ``last.ckpt``, exit 143; once
  training has finished, a SIGTERM waits until the model is written, then the exit is 0;
- ``<SM_OUTPUT_DATA_DIR>/summary.json``, written atomically after the model, says that training
  finished: whoever finds it knows the run completed;
- resumed from a checkpoint that had already reached max_epochs: no epoch runs, and the model
  and final metrics stay those of the finished training (from summary.json, else metrics.csv);
- on error: ``<output>/failure`` holds one line (type, message, where), exit 1.

It depends on nothing from dl itself: only the standard library, torch and lightning.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import io
import json
import math
import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXIT_STOPPED = 143
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


# -- the contract ------------------------------------------------------------------


class Contract:
    """Where things are, read from the toolkit's environment (defaults: SageMaker's paths)."""

    def __init__(self, environ: dict[str, str]) -> None:
        base = Path(environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        self.model_dir = Path(environ.get("SM_MODEL_DIR", base / "model"))
        self.output_dir = Path(environ.get("SM_OUTPUT_DIR", base / "output"))
        self.output_data_dir = Path(environ.get("SM_OUTPUT_DATA_DIR", self.output_dir / "data"))
        # CheckpointConfig.LocalPath; SageMaker names no variable for it.
        self.checkpoint_dir = Path(environ.get("DL_CHECKPOINT_DIR", base / "checkpoints"))
        self.hosts = json.loads(environ.get("SM_HOSTS", '["algo-1"]'))
        self.num_gpus = int(environ.get("SM_NUM_GPUS", "0") or 0)
        self.num_cpus = int(environ.get("SM_NUM_CPUS", str(os.cpu_count() or 1)) or 1)
        channels = json.loads(environ.get("SM_CHANNELS", "[]"))
        self.data_dirs = {
            name: environ.get(f"SM_CHANNEL_{name.upper()}", str(base / "input" / "data" / name)) for name in channels
        }


# -- hyperparameters ---------------------------------------------------------------


def _convert(decl: dict):
    """The argparse type of one declared parameter: the same values as dl's ``Param.parse``
    (orchestrator/jobs.py, which this file cannot import; tests/test_jobs.py holds the two to
    each other), with the same ranges and choices, so what dl accepts at launch trains here and
    what it refuses is refused here too."""
    kind = decl["type"]

    def parse(raw: str):
        text = raw.strip()
        if kind == "int":
            value = int(text)
        elif kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise argparse.ArgumentTypeError(f"expected a finite number, got {raw!r}")
        elif kind == "batches":
            value = float(text) if any(c in text for c in ".eE") else int(text)
            if isinstance(value, float) and not 0.0 <= value <= 1.0:
                raise argparse.ArgumentTypeError(f"expected a batch count or a fraction in [0, 1], got {raw!r}")
        elif kind == "workers":
            value = "auto" if text.lower() == "auto" else int(text)
        elif kind == "bool":
            if text.lower() not in _TRUE | _FALSE:
                raise argparse.ArgumentTypeError(f"expected true or false, got {raw!r}")
            value = text.lower() in _TRUE
        else:
            value = text
        choices, low, high = decl.get("choices"), decl.get("min"), decl.get("max")
        if choices is not None and value not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, choices))}; got {value!r}")
        if low is not None and isinstance(value, (int, float)) and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}; got {value}")
        if high is not None and isinstance(value, (int, float)) and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}; got {value}")
        return value

    parse.__name__ = kind
    return parse


def parse_hyperparameters(spec: dict, argv: list[str]) -> dict:
    """Parse ``--key value`` pairs against the job's declarations; unknown keys are an error.

    A declared key takes the next word as its value whatever it looks like (``--lr -1e-05``,
    ``--note --x``: argparse alone would take those for options)."""
    parser = argparse.ArgumentParser(prog="dl_entry.py", description=f"dl trainjob {spec['name']}")
    declared = {**spec["params"], **spec["trainer"]}
    flags = set()
    for name, decl in declared.items():
        flag = f"--{name}" if len(name) > 1 else f"-{name}"
        flags.add(flag)
        parser.add_argument(flag, dest=name, type=_convert(decl), default=decl["default"], help=decl.get("help"))
    joined, words = [], iter(argv)
    for word in words:
        value = next(words, None) if word in flags else None
        joined.append(word if value is None else f"{word}={value}")
    return vars(parser.parse_args(joined))


# -- building the job ----------------------------------------------------------------


def _load_class(ref: str):
    import importlib

    module_name, _, class_name = ref.partition(":")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def _accepted(cls, available: dict) -> dict:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(available)
    return {k: v for k, v in available.items() if k in params}


def dataloader_workers(requested: int | str, contract: Contract) -> int:
    """``num_workers``: a count, or ``auto``: the CPUs each training process has (SM_NUM_CPUS
    shared among the host's GPUs), less one for the process itself, at least one."""
    if requested != "auto":
        return int(requested)
    per_process = contract.num_cpus // max(1, contract.num_gpus)
    return max(1, per_process - 1)


def build(spec: dict, values: dict, contract: Contract):
    """Instantiate the job's data module, then its model, each with the parameters it accepts.

    Besides the job's parameters, the data module may take ``data_dirs`` (channel -> folder),
    ``num_workers`` and ``seed``; the model may take ``data_dirs``, and whatever the data module's
    ``model_kwargs()`` returns (what only the data knows, such as its classes).
    """
    model_cls = _load_class(spec["model"])
    data_cls = _load_class(spec["datamodule"])
    job_values = {k: values[k] for k in spec["params"]}
    workers = dataloader_workers(values["num_workers"], contract)
    if values["num_workers"] == "auto":
        print(f"dl: DataLoader workers: {workers} (num_workers=auto, SM_NUM_CPUS={contract.num_cpus})", flush=True)
    data_kwargs = _accepted(
        data_cls, {**job_values, "data_dirs": contract.data_dirs, "num_workers": workers, "seed": values["seed"]}
    )
    data = data_cls(**data_kwargs)
    from_data = data.model_kwargs() if callable(getattr(data, "model_kwargs", None)) else {}
    model_kwargs = _accepted(model_cls, {**job_values, "data_dirs": contract.data_dirs, **from_data})
    unused = set(job_values) - set(model_kwargs) - set(data_kwargs)
    if unused:
        raise TypeError(
            f"job.toml declares {', '.join(sorted(unused))} but neither {spec['model']} nor "
            f"{spec['datamodule']} accepts it as an __init__ argument"
        )
    return model_cls(**model_kwargs), data


# -- checkpoints -----------------------------------------------------------------------


def _checkpoint_loads(path: Path) -> str | None:
    """None when ``path`` loads as a checkpoint, else the reason it does not."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:  # any failure means: do not resume from it
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def resume_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint to resume from: last.ckpt, else best.ckpt; unreadable ones are set aside."""
    for name in ("last.ckpt", "best.ckpt"):
        path = checkpoint_dir / name
        if not path.is_file():
            continue
        problem = _checkpoint_loads(path)
        if problem is None:
            return path
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        os.replace(path, aside)
        print(f"dl: checkpoint {path} does not load ({problem}); moved to {aside.name}", flush=True)
    return None


def _callbacks(spec: dict, contract: Contract):
    from lightning.pytorch.callbacks import ModelCheckpoint

    monitor = spec.get("monitor")
    # Two callbacks: Lightning only refreshes a save_last checkpoint when top-k saved in the same
    # step, so last.ckpt would lag behind whenever the metric did not improve.
    last = ModelCheckpoint(dirpath=contract.checkpoint_dir, filename="last", save_top_k=1, enable_version_counter=False)
    best = ModelCheckpoint(
        dirpath=contract.checkpoint_dir,
        filename="best",
        monitor=monitor,
        mode=spec.get("mode", "min"),
        save_top_k=1,
        enable_version_counter=False,
    )

    epochs = epoch_metrics(contract)
    return best, epochs, ([best] if monitor else []) + [last, save_on_stop(contract), epochs]


def save_on_stop(contract: Contract, lib: str = "lightning.pytorch"):
    """A callback: SIGTERM between two batches writes last.ckpt, so that a resume continues from there.
    ``lib``: the Lightning package whose Trainer runs it (``pytorch_lightning`` too). Shared with the
    script wrapper (dl_script.py)."""
    import importlib

    L = importlib.import_module(lib)
    SIGTERMException = importlib.import_module(f"{lib}.utilities.exceptions").SIGTERMException

    class SaveOnStop(L.Callback):
        def on_exception(self, trainer, pl_module, exception):
            if isinstance(exception, SIGTERMException):
                path = contract.checkpoint_dir / "last.ckpt"
                trainer.save_checkpoint(path)
                print(f"dl: stop requested; saved {path.name} at step {trainer.global_step}", flush=True)

    return SaveOnStop()


def epoch_metrics(contract: Contract, lib: str = "lightning.pytorch"):
    """A callback: one metrics.csv row and one log line per epoch (every scalar the epoch logged).
    Shared with the script wrapper (dl_script.py)."""
    import importlib

    L = importlib.import_module(lib)

    class EpochMetrics(L.Callback):
        def __init__(self) -> None:
            self.path = contract.output_data_dir / "metrics.csv"
            self.rows = _read_rows(self.path)
            self.started = time.time()
            self.trained = 0  # epochs this process trained

        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            metrics = {
                k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1
            }
            row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
            self.rows = [r for r in self.rows if int(r["epoch"]) < trainer.current_epoch] + [row]
            _write_rows(self.path, self.rows)
            self.trained += 1
            shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
            took = time.time() - self.started
            print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({took:.1f}s)", flush=True)
            self.started = time.time()

    return EpochMetrics()


def _atomic_checkpoint_io(contract: Contract, monitor: str | None, lib: str = "lightning.pytorch"):
    import importlib

    TorchCheckpointIO = importlib.import_module(f"{lib}.plugins.io").TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Write to a temporary file in the same folder and rename: never a half-written checkpoint.
        Each checkpoint in the checkpoint folder is then recorded in its manifest.json."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            import torch

            path = Path(path)
            with _replacing(path) as tmp, open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
            if path.parent.resolve() == contract.checkpoint_dir.resolve():
                record_checkpoint(path, checkpoint, monitor)

    return AtomicCheckpointIO()


def record_checkpoint(path: Path, checkpoint: dict, monitor: str | None) -> None:
    """Update ``manifest.json`` beside ``path``: file, step, epoch, monitored value, size, sha256, time."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = None
    for key, state in (checkpoint.get("callbacks") or {}).items():
        # The callback that monitors the metric has it in its state key: ModelCheckpoint{'monitor': 'val_acc', ...}
        if monitor and f"'monitor': '{monitor}'" in str(key) and isinstance(state, dict):
            score = state.get("best_model_score") if path.name == "best.ckpt" else state.get("current_score")
            value = float(score) if score is not None else None
    manifest_path = path.parent / "manifest.json"
    try:
        entries = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        entries = {}
    entries[path.name] = {
        "file": path.name,
        "step": int(checkpoint.get("global_step", 0)),
        "epoch": int(checkpoint.get("epoch", 0)),
        "monitor": monitor,
        "value": value,
        "size": path.stat().st_size,
        "sha256": digest.hexdigest(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json(manifest_path, entries)


def warm_start_checkpoint(contract: Contract) -> Path | None:
    """The checkpoint given as the ``init`` channel (``dl launch --from RUN``), if any."""
    folder = contract.data_dirs.get("init")  # runtime_io.INIT_CHANNEL
    if not folder or not Path(folder).is_dir():
        return None
    found = sorted(Path(folder).rglob("*.ckpt"))
    if not found:
        # A schedule's best pointer before its first promotion: nothing to start from yet.
        print(f"dl: the init channel {folder} holds no checkpoint yet; training from scratch", flush=True)
        return None
    if len(found) != 1:
        raise ValueError(f"the init channel {folder} should hold exactly one .ckpt file, found {len(found)}")
    return found[0]


def warm_start(model, path: Path, with_optimizer: bool):
    """Load weights from ``path`` into ``model``; return a callback that restores the optimizer too."""
    import lightning as L
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    print(f"dl: warm start from {path.name} (epoch {checkpoint.get('epoch')}, step {checkpoint.get('global_step')})")
    if not with_optimizer:
        return None
    states = checkpoint.get("optimizer_states") or []

    class RestoreOptimizer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            if len(states) != len(trainer.optimizers):
                raise ValueError(f"{path.name} has {len(states)} optimizer states, the job {len(trainer.optimizers)}")
            for optimizer, state in zip(trainer.optimizers, states):
                optimizer.load_state_dict(state)
            print("dl: optimizer state restored too", flush=True)

    return RestoreOptimizer()


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict]) -> None:
    columns = ["epoch", "step"] + sorted({k for row in rows for k in row} - {"epoch", "step"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


# -- training ----------------------------------------------------------------------


def _quiet_lightning() -> None:
    """Drop Lightning's advertising tip and a torch deprecation that say nothing about the job."""
    import logging
    import warnings

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Tip:" not in record.getMessage()

    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")


def strategy(spec: dict, contract: Contract) -> str:
    """Lightning's strategy: its own choice, except DDP that looks for parameters without a gradient
    when the job asks for it and the run spans several GPUs or nodes (one process needs no DDP)."""
    distributed = contract.num_gpus > 1 or len(contract.hosts) > 1
    return "ddp_find_unused_parameters_true" if distributed and spec.get("find_unused_parameters") else "auto"


def _limit(value: int | float) -> int | float | None:
    """Lightning's batch limit: an int counts batches, a float is a fraction; 1.0 (all) passes as None."""
    return None if isinstance(value, float) and value == 1.0 else value


def train(spec: dict, values: dict, contract: Contract) -> dict:
    import lightning as L

    _quiet_lightning()

    L.seed_everything(values["seed"], workers=True, verbose=False)
    model, data = build(spec, values, contract)
    checkpoint, epochs, callbacks = _callbacks(spec, contract)
    resume = None if values["fast_dev_run"] else resume_checkpoint(contract.checkpoint_dir)
    init = warm_start_checkpoint(contract)
    if init is not None and resume is None:  # a run that resumes itself continues its own state
        restore = warm_start(model, init, values["init_optimizer"])
        callbacks += [restore] if restore else []
    trainer = L.Trainer(
        accelerator="auto",
        devices=contract.num_gpus if contract.num_gpus > 0 else "auto",
        num_nodes=max(1, len(contract.hosts)),
        strategy=strategy(spec, contract),
        max_epochs=values["max_epochs"],
        precision=values["precision"],
        # 1.0 means all batches; passing it makes Lightning announce it, so pass only real limits.
        limit_train_batches=_limit(values["limit_train_batches"]),
        limit_val_batches=_limit(values["limit_val_batches"]),
        fast_dev_run=values["fast_dev_run"],
        callbacks=callbacks,
        plugins=[_atomic_checkpoint_io(contract, spec.get("monitor"))],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(contract.output_data_dir),
    )
    if resume is not None:
        print(f"dl: resuming from {resume}", flush=True)
    finished = _StopAfterTraining()  # installed before fit: Lightning calls it too, and restores it after
    trainer.fit(model, datamodule=data, ckpt_path=str(resume) if resume else None)
    finished.training_done = True
    _test_fault("after-fit")

    final = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    if resume is not None and epochs.trained == 0:
        # The checkpoint had already reached max_epochs: the finished training's metrics stand.
        final = _finished_metrics(contract) or final
        print("dl: training had already reached max_epochs; keeping its model and final metrics", flush=True)
    summary = {
        "final": final,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "monitor": spec.get("monitor"),
        "best": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "best_checkpoint": Path(checkpoint.best_model_path).name if checkpoint.best_model_path else None,
    }
    if trainer.is_global_zero:
        contract.model_dir.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(contract.model_dir / "model.ckpt", weights_only=True)
        described = {"job": spec["name"], "model": spec["model"], "params": values, "metrics": final}
        _write_json(contract.model_dir / "dl_model.json", described)
        _write_json(contract.output_data_dir / "summary.json", summary)  # last: training finished
    return summary


class _StopAfterTraining:
    """The SIGTERM handler of the trainer: during training Lightning's own handler (which calls
    this one too) stops at the next batch; once training is done the stop waits for the model."""

    def __init__(self) -> None:
        import signal

        self.training_done = False
        signal.signal(signal.SIGTERM, self)

    def __call__(self, signum, frame) -> None:
        if self.training_done:
            print("dl: stop requested after training finished; writing the model first", flush=True)


def _finished_metrics(contract: Contract) -> dict:
    """The final metrics of training that had finished: summary.json's, else metrics.csv's last row."""
    try:
        final = json.loads((contract.output_data_dir / "summary.json").read_text()).get("final")
        if final:
            return final
    except (OSError, ValueError, AttributeError):
        pass
    rows = _read_rows(contract.output_data_dir / "metrics.csv")
    out = {}
    for key, value in (rows[-1] if rows else {}).items():
        if key not in ("epoch", "step") and value not in (None, ""):
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` as indented JSON, whole or not at all (see _replacing)."""
    _write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_text(path: Path, text: str) -> None:
    with _replacing(path) as tmp:
        tmp.write_text(text)


@contextmanager
def _replacing(path: Path):
    """Yield a temporary path beside ``path`` to write; then fsync it and rename it over ``path``
    (deleted instead if the block raises): a reader never sees half a file. The runtime's one
    copy of orchestrator/fsutil.py's ``replacing`` (the runtime imports nothing from dl)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _test_fault(point: str) -> None:
    """Test-only fault injection, as orchestrator/faults.py describes (DL_TEST_FAULT=POINT:ACTION);
    a copy, since the runtime imports nothing from dl. Does nothing unless the variable names ``point``."""
    import signal

    spec = os.environ.get("DL_TEST_FAULT", "")
    name, _, action = spec.partition(":")
    if not spec or name != point:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "pause":
        barrier = Path(os.environ["DL_TEST_FAULT_DIR"]) / point
        barrier.write_text(str(os.getpid()))
        while barrier.exists():
            time.sleep(0.02)


def _failure_line(exc: BaseException) -> str:
    """'Type: message (file.py:line in function)' naming the innermost frame of the job's own code."""
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith(str(HERE)):
            where = f" ({Path(frame.filename).name}:{frame.lineno} in {frame.name})"
            break
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((HERE / "dl_job.json").read_text())
    values = parse_hyperparameters(spec, sys.argv[1:] if argv is None else argv)
    contract = Contract(dict(os.environ))
    try:
        from lightning.pytorch.utilities.exceptions import SIGTERMException
    except ImportError as exc:
        print(f"dl: lightning is not installed here ({exc}); add it to requirements.txt", file=sys.stderr)
        return 1
    try:
        train(spec, values, contract)
    except SIGTERMException:
        print("dl: stopped", flush=True)
        return EXIT_STOPPED
    except Exception as exc:
        line = _failure_line(exc)
        contract.output_dir.mkdir(parents=True, exist_ok=True)
        (contract.output_dir / "failure").write_text(line + "\n")
        traceback.print_exc()
        print(f"dl: training failed: {line}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
