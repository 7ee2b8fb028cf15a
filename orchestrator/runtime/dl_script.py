"""dl runtime wrapper: runs a user's own training script, unchanged, under the container contract.

SageMaker's toolkit (or dl's local backend, which reproduces it) runs this file as the
program (``sagemaker_program``) from the extracted package: ``python dl_script.py --key value ...``.
``dl_job.json`` names the script. The hyperparameters become the script's argv: the words given
after ``--`` at launch (``dl_script_args``, a JSON list) first, then every ``--set key=value`` as
``--key value``. The script then runs with :mod:`runpy` as ``__main__``, as ``python SCRIPT`` would.

A script that imports ``lightning`` or ``pytorch_lightning`` gets what trainjobs get, by patching
that package's ``Trainer`` before the script runs (the script's own arguments always win, and
``PL_TRAINER_*`` variables count as the script's own):

- devices = SM_NUM_GPUS and num_nodes = len(SM_HOSTS) when the script sets neither;
- default_root_dir = SM_OUTPUT_DATA_DIR (not the code folder) when the script sets none;
- ``last.ckpt`` in the checkpoint folder every epoch, written atomically and recorded in its
  manifest.json (a ModelCheckpoint of dl's own beside the script's, which is kept as it is);
- ``fit`` without a ``ckpt_path`` resumes from ``last.ckpt`` when one is there;
- SIGTERM (``dl stop``, StopTrainingJob) saves ``last.ckpt`` before the exit (143);
- each epoch's logged scalars in ``<SM_OUTPUT_DATA_DIR>/metrics.csv`` and one log line per epoch;
- after ``fit``: the final weights in ``<SM_MODEL_DIR>/model.ckpt`` and ``summary.json``;
- ``dl_fast_dev_run`` (the dry run's smoke test): ``fast_dev_run=True``, one train and one
  validation batch.

The log says which of these it applied. A script without Lightning runs as it is, with the SM_*
variables and folders and ``DL_CHECKPOINT_DIR``; its checkpoints are its own. On failure
``<output>/failure`` holds one line: the script's own last error line (an exception's type and
message, or what it printed before a non-zero exit, such as an argument parser's error).

Standard library only (and the Lightning the script imports); the helpers shared with trainjobs
(the contract, checkpoints, metrics, SIGTERM) are dl_entry.py's, which every package holds.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import dl_entry as rt  # noqa: E402  (beside this file in every script package)

ARGS_KEY = "dl_script_args"
SMOKE_KEY = "dl_fast_dev_run"
_LIBS = {"lightning": "lightning.pytorch", "pytorch_lightning": "pytorch_lightning"}


def script_argv(argv: list[str]) -> tuple[list[str], bool]:
    """(the script's arguments, smoke test?) from the toolkit's ``--key value`` pairs."""
    words, args, extra, smoke = iter(argv), [], [], False
    for word in words:
        value = next(words, "")
        key = word.lstrip("-")
        if key == ARGS_KEY:
            args = json.loads(value) if value else []
        elif key == SMOKE_KEY:
            smoke = value.strip().lower() in rt._TRUE
        else:
            extra += [word, value]
    return [*args, *extra], smoke


def patch_trainer(lib: str, contract: rt.Contract, smoke: bool) -> None:
    """Give ``lib``'s Trainer dl's defaults and callbacks, and ``fit`` auto-resume and the model."""
    import importlib

    pl = importlib.import_module(lib)
    checkpoint_cls = importlib.import_module(f"{lib}.callbacks").ModelCheckpoint
    trainer_cls = pl.Trainer

    class LastCheckpoint(checkpoint_cls):
        """last.ckpt every epoch; its own state key, so it never clashes with the script's."""

        @property
        def state_key(self) -> str:
            return "dl-last-checkpoint"

    original_init, original_fit = trainer_cls.__init__, trainer_cls.fit

    defaults = {n: p.default for n, p in inspect.signature(original_init).parameters.items()}

    def own(kwargs: dict, name: str) -> bool:
        """Whether the script chose ``name``: a value other than the Trainer's default (LightningCLI
        passes every default explicitly), or a PL_TRAINER_* variable."""
        given = name in kwargs and kwargs[name] != defaults.get(name)
        return given or f"PL_TRAINER_{name.upper()}" in os.environ

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        applied, kept = [], []
        if smoke:
            kwargs["fast_dev_run"] = True
            applied.append("fast_dev_run (smoke test: one train and one validation batch)")
        if contract.num_gpus > 0 and not own(kwargs, "devices"):
            kwargs["devices"] = contract.num_gpus
            applied.append(f"devices={contract.num_gpus}")
        if len(contract.hosts) > 1 and not own(kwargs, "num_nodes"):
            kwargs["num_nodes"] = len(contract.hosts)
            applied.append(f"num_nodes={len(contract.hosts)}")
        if not own(kwargs, "default_root_dir"):
            # Not the code folder (the toolkit's working folder): LightningCLI's saved config and the
            # script's own logs and checkpoints go with the outputs (SageMaker keeps output/data).
            kwargs["default_root_dir"] = str(contract.output_data_dir)
            applied.append(f"default_root_dir={contract.output_data_dir}")
        for name in ("devices", "num_nodes", "accelerator", "default_root_dir"):
            if own(kwargs, name):
                kept.append(f"{name}={kwargs.get(name, os.environ.get(f'PL_TRAINER_{name.upper()}'))}")
        callbacks = kwargs.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if not smoke:
            if kwargs.get("enable_checkpointing", True) is False:
                kept.append("enable_checkpointing=False (no last.ckpt, no auto-resume)")
            else:
                last = LastCheckpoint(dirpath=contract.checkpoint_dir, filename="last", save_top_k=1,
                                      enable_version_counter=False)  # fmt: skip
                callbacks.append(last)
                applied.append(f"last.ckpt every epoch in {contract.checkpoint_dir}")
            callbacks.append(rt.save_on_stop(contract, lib))
            applied.append("SIGTERM saves last.ckpt")
        self._dl_epochs = rt.epoch_metrics(contract, lib)
        callbacks.append(self._dl_epochs)
        applied.append("epoch metrics to metrics.csv")
        kwargs["callbacks"] = callbacks
        if not kwargs.get("plugins"):
            kwargs["plugins"] = [rt._atomic_checkpoint_io(contract, None, lib)]
        print(f"dl: Lightning script ({lib}); applied: {', '.join(applied)}", flush=True)
        if kept:
            print(f"dl: kept the script's own {', '.join(kept)}", flush=True)
        original_init(self, *args, **kwargs)

    @functools.wraps(original_fit)
    def fit(self, *args, **kwargs):
        bound = inspect.signature(original_fit).bind(self, *args, **kwargs)
        if bound.arguments.get("ckpt_path") is None and not smoke:
            resume = rt.resume_checkpoint(contract.checkpoint_dir)
            if resume is not None:
                bound.arguments["ckpt_path"] = str(resume)
                print(f"dl: resuming from {resume}", flush=True)
        elif bound.arguments.get("ckpt_path") is not None:
            print(f"dl: the script passed ckpt_path={bound.arguments['ckpt_path']}; no auto-resume", flush=True)
        finished = rt._StopAfterTraining()  # before fit: Lightning calls it too, and restores it after
        result = original_fit(*bound.args, **bound.kwargs)
        finished.training_done = True
        rt._test_fault("after-fit")
        if not smoke and self.is_global_zero:
            final = {k: float(v) for k, v in self.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
            contract.model_dir.mkdir(parents=True, exist_ok=True)
            self.save_checkpoint(contract.model_dir / "model.ckpt", weights_only=True)
            summary = {"final": final, "epochs": self.current_epoch, "global_step": self.global_step}
            rt._write_json(contract.output_data_dir / "summary.json", summary)
            print(f"dl: final weights in {contract.model_dir / 'model.ckpt'}", flush=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # after fit, a stop ends the script at once
        return result

    trainer_cls.__init__, trainer_cls.fit = __init__, fit


class _LastError:
    """sys.stderr that remembers the last line naming an error (else the last line) it wrote."""

    def __init__(self, stream) -> None:
        self.stream, self.pending, self.last, self.error = stream, "", "", ""

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in filter(str.strip, lines):
            self.last = line.strip()
            if "error" in line.lower():
                self.error = line.strip()
        return self.stream.write(text)

    def line(self) -> str:
        return self.error or self.last or self.pending.strip()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _fail(contract: rt.Contract, line: str) -> None:
    contract.output_dir.mkdir(parents=True, exist_ok=True)
    (contract.output_dir / "failure").write_text(line + "\n")
    print(f"dl: the script failed: {line}", file=sys.__stderr__, flush=True)


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((HERE / "dl_job.json").read_text())
    args, smoke = script_argv(sys.argv[1:] if argv is None else argv)
    contract = rt.Contract(dict(os.environ))
    os.environ.setdefault("DL_CHECKPOINT_DIR", str(contract.checkpoint_dir))
    script = HERE / spec["script"]
    lib = _LIBS.get(spec.get("lightning") or "")
    stopped: tuple = ()
    if lib:
        try:
            patch_trainer(lib, contract, smoke)
            stopped = (__import__(f"{lib}.utilities.exceptions", fromlist=["x"]).SIGTERMException,)
        except ImportError as exc:
            _fail(contract, f"ImportError: {exc} (add it to the project's requirements.txt)")
            return 1
        rt._quiet_lightning()
    else:
        print(f"dl: {spec['script']} imports no Lightning: it runs as it is, and its checkpoints are its own"
              f" (save them in DL_CHECKPOINT_DIR={contract.checkpoint_dir} to keep them)", flush=True)  # fmt: skip
        if smoke:
            print("dl: smoke test of a script without Lightning: it compiles; it was not run", flush=True)
            return 0
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    errors = sys.stderr = _LastError(sys.stderr)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except stopped:  # Lightning's SIGTERMException is a SystemExit: before the clause for those
        print("dl: stopped", flush=True)
        return rt.EXIT_STOPPED
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code != 0:
            if exc.code is not None and not isinstance(exc.code, int):
                errors.write(f"{exc.code}\n")
            _fail(contract, errors.line() or f"{spec['script']} exited with code {code}")
        return code
    except Exception as exc:
        traceback.print_exc()
        _fail(contract, rt._failure_line(exc))
        return 1
    finally:
        sys.stderr = errors.stream
    return 0


if __name__ == "__main__":
    sys.exit(main())
