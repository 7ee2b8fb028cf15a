"""`dl doctor`: is this machine (and each target's account) ready to train, and if not, what to do.

Each check is a small function that returns a :class:`Check` (plain data: a status, one line,
a fix). :func:`run` runs them in order: this machine and the settings here, then each backend's
own checks (a backend with the DOCTOR feature; the sagemaker backend's AWS checks are in
backends/sagemaker/doctor.py); a check whose prerequisite failed is skipped rather than failing
again. Nothing here costs money or changes anything; torch is imported in a child process with
a timeout, so a broken CUDA install cannot hang it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

from orchestrator import __version__, config
from orchestrator.errors import DlError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
MIN_PYTHON = (3, 11)
LOCAL_TIMEOUT_S = 120.0
_PACKAGES = ("boto3", "botocore", "typer", "click", "torch", "lightning")
_TRAIN_EXTRA = "pip install -e '.[train]'"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    line: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """Only a failure fails doctor; a warning or a skipped check does not."""
        return self.status != FAIL

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


# -- this machine --------------------------------------------------------------------------


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    shown = ".".join(map(str, version))
    if version[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check("python", FAIL, f"Python {shown} is too old for dl", f"Use Python {need} or newer.")
    return Check("python", OK, f"Python {shown} ({sys.executable})")


def check_packages() -> Check:
    """Versions from the installed metadata (nothing is imported)."""
    found, missing = [f"dl {__version__}"], []
    for name in _PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    line = ", ".join(found) + (f"; not installed: {', '.join(missing)}" if missing else "")
    if "boto3" in missing or "botocore" in missing:
        return Check(
            "packages", FAIL, line, "The AWS checks and the sagemaker target need boto3: pip install -e '.[aws]'."
        )
    return Check("packages", OK, line)


class LocalProbe:
    """Imports torch and lightning in a child process, started early so it runs while the AWS
    checks wait on the network; :meth:`result` collects it (with a timeout)."""

    _CODE = (
        "import json, time; t = time.monotonic(); import torch, lightning; "
        "n = torch.cuda.device_count() if torch.cuda.is_available() else 0; "
        "print(json.dumps({'torch': torch.__version__, 'lightning': lightning.__version__, 'cuda': n, "
        "'names': [torch.cuda.get_device_name(i) for i in range(n)], 'seconds': time.monotonic() - t}))"
    )

    def __init__(self, python: str = sys.executable, timeout: float = LOCAL_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._proc = subprocess.Popen(
            [python, "-c", self._CODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def close(self) -> None:
        """Stop the child if it is still running (doctor was interrupted)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()

    def result(self, target: str = "local") -> Check:
        """``target``: the default target; without torch, a local default fails, a cloud one warns."""
        try:
            out, err = self._proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            return Check(
                "local",
                FAIL,
                f"Importing torch did not finish in {self.timeout:g}s",
                "A broken CUDA driver or install can hang it: try `python -c 'import torch'`; reinstall torch.",
            )
        if self._proc.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            status = FAIL if target == "local" else WARN
            return Check(
                "local", status, f"torch and lightning do not import ({last})", f"For local runs: {_TRAIN_EXTRA}."
            )
        try:
            info = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return Check("local", FAIL, f"Could not read the torch probe's answer: {out.strip()[:200]!r}", "")
        gpus = (
            f"{info['cuda']} CUDA GPU{'s' if info['cuda'] > 1 else ''} ({', '.join(dict.fromkeys(info['names']))})"
            if info["cuda"]
            else "no CUDA GPU visible (local runs use the CPU)"
        )
        return Check(
            "local",
            OK,
            f"torch {info['torch']} and lightning {info['lightning']} import ({info['seconds']:.1f}s); {gpus}",
        )


# -- all of them ---------------------------------------------------------------------------


def run(
    gpu: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    local: bool = True,
) -> list[Check]:
    """Every check, in order: this machine, settings, each registered backend's own checks
    (SupportsDoctor: the sagemaker backend's region, credentials, stack, bucket, role, quota),
    then torch. ``local=False`` skips importing torch; ``gpu`` is for the backends' checks (an
    unknown one is a UsageError)."""
    from orchestrator.backends import REGISTRY, Capability, get_backend, supports

    backends = [b for b in map(get_backend, REGISTRY) if supports(b, Capability.DOCTOR)]
    probe = LocalProbe() if local else None
    try:
        checks = [check_python(), check_packages()]
        try:
            settings = config.load_settings(cli={"region": region, "profile": profile})
        except DlError as exc:
            checks.append(Check("config", FAIL, exc.message, exc.hint))
            settings = None
        else:
            where = f"Settings from {settings.config_path}" if settings.config_path else "No dl.toml here or above"
            checks.append(Check("config", OK, f"{where}; target {settings.target}"))
        for backend in backends:
            checks += backend.doctor_checks(settings, {"gpu": gpu})
        if probe:
            checks.append(probe.result(settings.target if settings else "local"))
        return checks
    finally:
        if probe:
            probe.close()


def skip(name: str, because: str) -> Check:
    """A check not run because ``because`` (its prerequisite) is missing."""
    return Check(name, SKIP, f"Not checked: needs {because}")


def exit_code(checks: list[Check]) -> int:
    return 0 if all(check.ok for check in checks) else 1
