"""The parts of SageMaker that moto does not play, played openly from the test side.

moto (in server mode, on 127.0.0.1) holds training jobs, S3 and CloudWatch Logs, but it
marks every training job Completed the moment it is created, runs nothing, writes no
logs, and has no StopTrainingJob. Two helpers fill those gaps without touching dl:

- ``play_training_job`` does what SageMaker and its in-container toolkit do with a job
  that moto holds: fetch the package, lay out ``/opt/ml``, run the entry point under the
  container contract, upload checkpoints, ``model.tar.gz`` and ``output.tar.gz`` where the
  job's request says, and write the program's output as CloudWatch log events.
- ``MotoProxy`` sits between dl and moto on 127.0.0.1, forwards every request unchanged,
  records what was asked (so a test can count AWS calls over real HTTP), and lets a test
  answer a given action itself: an API moto lacks (StopTrainingJob), a state moto cannot
  express (a job still InProgress), or an AWS error (a quota of zero, throttling).

The facts these follow are in /work/shared/SAGEMAKER_CONTRACT.md.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from orchestrator.backends.local import contract
from orchestrator.backends.local.supervisor import run_program
from orchestrator.packaging import extract_package

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# CheckpointConfig.LocalPath is a path inside the container, under SageMaker's base /opt/ml.
CONTAINER_BASE = "/opt/ml"


# -- SageMaker's part: run a job that moto holds ---------------------------------------------


@dataclass
class PlayedJob:
    """What ``play_training_job`` did: the container folder, the exit code and the program's output."""

    base: Path
    returncode: int
    output: str
    log_stream: str


def play_training_job(session, job_name: str, workdir: Path, endpoint_url: str | None = None) -> PlayedJob:
    """Run training job ``job_name`` as SageMaker would, with moto holding the job and the data.

    ``session`` is a boto3 Session; its clients go to ``endpoint_url`` (else AWS_ENDPOINT_URL).
    The job's own description drives everything: the package from ``sagemaker_submit_directory``,
    the hyperparameters (JSON-decoded, as the toolkit decodes them), the channels of
    InputDataConfig (each S3 prefix copied into ``input/data/<channel>/``, File mode),
    CheckpointConfig (restored before the run, uploaded after it) and OutputDataConfig
    (``model/`` and ``output/data/`` uploaded as ``<S3OutputPath>/<job>/output/{model,output}.tar.gz``).
    The program runs on this machine, through dl's reproduction of the toolkit's contract
    (orchestrator/backends/local/contract.py, checked against AWS's toolkit elsewhere), as ``algo-1``.

    Deliberate limits: one instance only, File mode only, no retry of a failed job, and no
    ``pip install -r requirements.txt`` (this Python already has what the package asks for).
    moto cannot be told the outcome, so a job that fails here still reads Completed there.
    """
    sm, s3, logs = (session.client(name, endpoint_url=endpoint_url) for name in ("sagemaker", "s3", "logs"))
    job = sm.describe_training_job(TrainingJobName=job_name)
    if job["ResourceConfig"]["InstanceCount"] != 1:
        raise NotImplementedError("the double plays single-instance jobs only")
    base = Path(workdir) / "opt" / "ml"
    base.mkdir(parents=True)

    # Hyperparameters arrive as strings; the toolkit json.loads each, keeping the raw string on failure.
    hyperparameters = {key: _decode(value) for key, value in job["HyperParameters"].items()}
    program = hyperparameters.pop("sagemaker_program")
    submit_dir = hyperparameters.pop("sagemaker_submit_directory")
    region = hyperparameters.pop("sagemaker_region", "")
    # Other sagemaker_* keys (sagemaker_torch_distributed_enabled) stay: the contract splits them
    # off the program's arguments by the toolkit's own rule.

    channels: dict[str, Path] = {}
    for channel in job.get("InputDataConfig", []):
        assert channel.get("InputMode", "File") == "File", "the double copies channels in File mode only"
        name = channel["ChannelName"]
        channels[name] = base / "input" / "data" / name
        _download_prefix(s3, channel["DataSource"]["S3DataSource"]["S3Uri"], channels[name])

    checkpoints = job.get("CheckpointConfig")
    if checkpoints:
        local = checkpoints.get("LocalPath", CONTAINER_BASE + "/checkpoints")
        assert local == CONTAINER_BASE + "/checkpoints", f"the runtime finds checkpoints under the base, not {local}"
        # A (re)started job finds what an earlier attempt synced to S3.
        _download_prefix(s3, checkpoints["S3Uri"], base / "checkpoints")

    spec = contract.ContainerSpec(
        job_name=job_name,
        program=program,
        submit_dir=submit_dir,
        hyperparameters=hyperparameters,
        channels=channels,
        instance_type=job["ResourceConfig"]["InstanceType"],
        hosts=["algo-1"],
        num_gpus=contract.detect_gpus(),  # the GPUs of this machine, as the toolkit counts them
        region=region,
    )
    contract.layout(base, spec)
    package = Path(workdir) / "sourcedir.tar.gz"
    bucket, key = _split(submit_dir)
    s3.download_file(bucket, key, str(package))
    extract_package(package, base / "code")

    # The container's environment: the job's Environment (moto keeps none) and the toolkit's variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(job.get("Environment", {}))
    env.update(contract.training_env(base, spec))
    log_path = Path(workdir) / "program-output.txt"
    with open(log_path, "wb") as out:
        returncode, _reason = run_program(base, spec, env, out)
    output = log_path.read_text(errors="replace")

    if checkpoints:
        _upload_folder(s3, base / "checkpoints", checkpoints["S3Uri"])
    destination = f"{job['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job_name}/output"
    _upload_tarball(s3, base / "model", f"{destination}/model.tar.gz")
    _upload_tarball(s3, base / "output" / "data", f"{destination}/output.tar.gz")
    stream = _write_log_events(logs, job_name, output)
    return PlayedJob(base, returncode, output, stream)


def _decode(value: str):
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return value


def _split(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlsplit(uri)
    assert parsed.scheme == "s3", uri
    return parsed.netloc, parsed.path.lstrip("/")


def _download_prefix(s3, uri: str, dest: Path) -> None:
    """Copy every object whose key starts with the S3 prefix into ``dest``, as SageMaker's S3Prefix
    does: paths are kept below the prefix's last '/', so a prefix naming one object gives that file."""
    bucket, prefix = _split(uri)
    dest.mkdir(parents=True, exist_ok=True)
    folder = prefix if prefix.endswith("/") or "/" not in prefix else prefix.rsplit("/", 1)[0] + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(folder) :].lstrip("/")
            if relative and not relative.endswith("/"):
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))


def _upload_folder(s3, folder: Path, uri: str) -> None:
    bucket, prefix = _split(uri)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}")


def _upload_tarball(s3, folder: Path, uri: str) -> None:
    """A gzipped tar of the folder's contents, paths relative to it, as SageMaker packs model/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(folder).as_posix())
    bucket, key = _split(uri)
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def _write_log_events(logs, job_name: str, output: str) -> str:
    """The program's output as events in SageMaker's group and stream naming: ``<job>/algo-1-<epoch s>``."""
    stream = f"{job_name}/algo-1-{int(time.time())}"
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    put_log_lines(logs, stream, output.splitlines())
    return stream


def put_log_lines(logs, stream: str, lines: list[str]) -> None:
    """Append ``lines`` to a log stream as events, one per line, in order."""
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines) if line]
    if events:
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)


# -- a recording proxy in front of moto ------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Exchange:
    """One request through the proxy. ``forward()`` sends it to moto unchanged and returns moto's reply."""

    action: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    forward: Callable[[], Reply]


def aws_json_error(code: str, message: str, status: int = 400) -> Reply:
    """An error as AWS's JSON protocol services (SageMaker, CloudWatch Logs) send it."""
    body = json.dumps({"__type": code, "Message": message}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "dl-test-double"}
    return Reply(status, headers, body)


def aws_json(answer: dict) -> Reply:
    return Reply(200, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "dl-test-double"},
                 json.dumps(answer).encode())  # fmt: skip


def patched(change: Callable[[dict], None]) -> Callable[[Exchange], Reply]:
    """An answer that is moto's own, with ``change`` applied to its JSON body."""

    def respond(exchange: Exchange) -> Reply:
        reply = exchange.forward()
        if reply.status != 200:
            return reply
        answer = reply.json()
        change(answer)
        return aws_json(answer)

    return respond


class MotoProxy:
    """An HTTP server on 127.0.0.1 that forwards everything to moto byte for byte and records it.

    Each request is recorded by its action: the ``X-Amz-Target`` header for JSON-protocol APIs
    (``SageMaker.CreateTrainingJob``, ``Logs_20140328.GetLogEvents``), else ``METHOD /path``
    (S3: ``PUT /bucket/key``). ``answer(action, reply)`` makes the proxy answer requests whose
    action starts with ``action`` itself, with a fixed ``Reply`` or a function of the
    ``Exchange``; this plays what moto lacks. Use as a context manager; ``url`` is its endpoint.
    """

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._answers: dict[str, Reply | Callable[[Exchange], Reply]] = {}
        self._lock = threading.Lock()
        self.actions: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="moto-proxy", daemon=True
        )

    def __enter__(self) -> MotoProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def answer(self, action: str, reply: Reply | Callable[[Exchange], Reply] | None) -> None:
        """Answer requests whose action starts with ``action`` with ``reply``; None forwards them again."""
        with self._lock:
            if reply is None:
                self._answers.pop(action, None)
            else:
                self._answers[action] = reply

    def count(self, action: str) -> int:
        """How many requests so far had an action starting with ``action``."""
        with self._lock:
            return sum(1 for seen in self.actions if seen.startswith(action))

    def reset_counts(self) -> None:
        with self._lock:
            self.actions.clear()

    def _handle(self, exchange: Exchange) -> Reply:
        with self._lock:
            self.actions.append(exchange.action)
            chosen = next((r for key, r in self._answers.items() if exchange.action.startswith(key)), None)
        if chosen is None:
            return exchange.forward()
        return chosen(exchange) if callable(chosen) else chosen

    def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders(body if body or method not in ("GET", "HEAD", "DELETE") else None)
            response = connection.getresponse()
            data = response.read()
            return Reply(response.status, dict(response.getheaders()), data)
        finally:
            connection.close()


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        proxy: MotoProxy = self.server.proxy
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if "Transfer-Encoding" in self.headers:
            headers["Content-Length"] = str(len(body))
        path = urllib.parse.urlsplit(self.path).path
        action = self.headers.get("X-Amz-Target") or f"{self.command} {path}"
        exchange = Exchange(
            action, self.command, path, headers, body, lambda: proxy._forward(self.command, self.path, headers, body)
        )
        reply = proxy._handle(exchange)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command == "HEAD":
            length = next((v for k, v in reply.headers.items() if k.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)
        self.close_connection = True

    def _read_chunked(self) -> bytes:
        data = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

    def log_message(self, format, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's signature)
        pass
