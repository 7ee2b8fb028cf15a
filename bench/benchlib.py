"""What the benchmarks share: a moto server of their own, and tools installed into bench venvs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def tool_environment(drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This environment for the timed tools, less the variables starting with ``drop``, and less
    PYTHONDONTWRITEBYTECODE: with it, a tool whose modules have no ``.pyc`` yet (dl in an editable
    install: its source is this checkout) compiles every module on every run, ~0.05 s that an
    installed dl never pays (pip writes the ``.pyc`` files at install time, as it did for the aws
    CLI and the SageMaker SDK in their bench venvs). The warm-up run writes them."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "PYTHONDONTWRITEBYTECODE"}


def start_moto(log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A moto server on a free loopback port (the venv's `moto_server`), answering; exits if it does not."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = Path(sys.executable).parent / "moto_server"
    stderr = log.open("w") if log else subprocess.DEVNULL
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    where = f" See {log}." if log else ""
    sys.exit(f"moto_server did not answer at {url}; is moto[server] installed in this venv?{where}")


def venv_tool(explicit: str | None, venv: Path, package: str, exe: str) -> tuple[str | None, str]:
    """(executable or None, how it was found or why there is none): ``explicit`` when given, else
    ``venv/bin/exe``, installing ``package`` into ``venv`` first if needed."""
    if explicit:
        return (explicit, "given") if os.access(explicit, os.X_OK) else (None, f"{explicit} is not executable")
    path = venv / "bin" / exe
    if not path.exists():
        print(f"installing {package} into {venv} ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", package]
            subprocess.run(pip, check=True, timeout=900)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"could not install {package} into {venv}: {exc}"
    if not path.exists():
        return None, f"{package} installed no {exe} into {venv}/bin (no binary for this platform?)"
    return str(path), f"bench venv ({venv})"
