"""A fault-injecting S3 proxy on 127.0.0.1, in front of the moto server.

moto answers every request correctly and at once. Real S3 does not always: it answers
``500 InternalError`` and ``503 SlowDown`` now and then (and asks clients to retry), and a
long download can lose its connection halfway through the body. moto cannot produce any of
that, so this proxy plays it, openly, from the test side. ``S3Faults`` forwards every
request to moto unchanged, streams response bodies back in chunks, counts the body bytes it
served per (method, path), and on request:

- ``fail(times, when, status)``: answers the next ``times`` matching requests itself with a
  500 InternalError or 503 SlowDown (or a 403 AccessDenied), with S3's XML error body and status code;
- ``drop(times, when, after)``: closes the connection after ``after`` bytes of the body of
  the next ``times`` matching responses (the client sees a short read);
- ``cut_once(when, at, hold=True)``: cuts one matching response at body byte ``at``; with
  ``hold`` it first stops sending there and waits for ``release()`` (or a deadline), so a
  test can kill the client at a known point ("kill a pull halfway");
- ``corrupt(times, when, at)``: flips body byte ``at`` of the next ``times`` matching
  responses, as a faulty network path can (TCP's checksum misses some), so the client's
  end-to-end check must catch it.

``when`` is a predicate on ``Seen`` (method, path, headers); ``gets(suffix)`` and
``puts(prefix)`` make the common ones. Paths are path-style (``/bucket/key``), which is what
botocore sends to an endpoint given as an IP address.
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 256 * 1024
ERRORS = {
    403: ("AccessDenied", "Access Denied"),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}
# Not forwarded: per-connection headers (and Expect: this proxy answers 100-continue itself).
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "expect"}
_OWN = {"content-length", "server", "date"}  # response headers this proxy writes itself


@dataclass
class Seen:
    """One request as the proxy saw it; ``status`` is what the client got (0 = connection cut)."""

    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    served: int = 0  # body bytes sent to the client

    @property
    def range(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "range"), None)

    @property
    def agent(self) -> str:
        """Who made the request: "dl" (dl's botocore clients, whose User-Agent carries "app/dl":
        orchestrator/backends/sagemaker/aws.py), "botocore" (another botocore client, such as a
        test's own), or the User-Agent itself."""
        agent = next((v for k, v in self.headers.items() if k.lower() == "user-agent"), "")
        return "dl" if " app/dl" in agent else "botocore" if "Botocore/" in agent else agent


@dataclass
class _Fault:
    kind: str  # "fail" | "drop" | "corrupt"
    times: int
    when: Callable[[Seen], bool]
    status: int = 0
    after: int = 0
    hold: threading.Event | None = None
    reached: threading.Event = field(default_factory=threading.Event)


class Cut:
    """A one-off cut: ``reached`` is set once the body has been served up to the cut."""

    def __init__(self, fault: _Fault) -> None:
        self._fault = fault
        self.reached = fault.reached

    def release(self) -> None:
        """Let a held cut go on to close the connection."""
        if self._fault.hold is not None:
            self._fault.hold.set()


def gets(suffix: str) -> Callable[[Seen], bool]:
    """GETs of a key ending with ``suffix``."""
    return lambda seen: seen.method == "GET" and seen.path.endswith(suffix)


def puts(prefix: str) -> Callable[[Seen], bool]:
    """PUTs (and multipart part uploads) to a path starting with ``prefix``."""
    return lambda seen: seen.method == "PUT" and seen.path.startswith(prefix)


class S3Faults:
    """Forward to moto at ``upstream``, count served bytes, inject the faults moto cannot.

    Use as a context manager; ``url`` is the endpoint to give boto3 (AWS_ENDPOINT_URL).
    Every connection is closed after one exchange (no keep-alive), which clients handle.
    """

    def __init__(self, upstream: str, hold_timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._hold_timeout = hold_timeout
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self.seen: list[Seen] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.faults = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="s3-faults", daemon=True
        )

    def __enter__(self) -> S3Faults:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            for fault in self._faults:
                if fault.hold is not None:
                    fault.hold.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- what a test asks for ---------------------------------------------------------------

    def fail(self, times: int, when: Callable[[Seen], bool], status: int = 500) -> None:
        """Answer the next ``times`` requests matching ``when`` with ``status`` (403, 500 or 503)."""
        if status not in ERRORS:
            raise ValueError(f"status {status}: use one of {sorted(ERRORS)}")
        self._add(_Fault("fail", times, when, status=status))

    def drop(self, times: int, when: Callable[[Seen], bool], after: int) -> None:
        """Close the connection after ``after`` body bytes of the next ``times`` matching responses."""
        self._add(_Fault("drop", times, when, after=after))

    def cut_once(self, when: Callable[[Seen], bool], at: int, hold: bool = False) -> Cut:
        """Cut the next matching response at body byte ``at``; with ``hold``, wait there for release()."""
        fault = _Fault("drop", 1, when, after=at, hold=threading.Event() if hold else None)
        self._add(fault)
        return Cut(fault)

    def corrupt(self, times: int, when: Callable[[Seen], bool], at: int) -> None:
        """Flip body byte ``at`` of the next ``times`` matching responses."""
        self._add(_Fault("corrupt", times, when, after=at))

    def served(self, method: str, path_suffix: str = "") -> int:
        """Body bytes served so far for ``method`` on paths ending with ``path_suffix``."""
        with self._lock:
            return sum(s.served for s in self.seen if s.method == method and s.path.endswith(path_suffix))

    def requests(self, method: str, path_suffix: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and s.path.endswith(path_suffix)]

    def counts(self) -> Counter:
        """Requests so far by (method, path)."""
        with self._lock:
            return Counter((s.method, s.path) for s in self.seen)

    def reset(self) -> None:
        """Forget what was seen (faults still armed stay armed)."""
        with self._lock:
            self.seen.clear()

    # -- the proxy --------------------------------------------------------------------------

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, seen: Seen) -> _Fault | None:
        """The first armed fault that matches ``seen``, counted down (and disarmed at zero)."""
        with self._lock:
            self.seen.append(seen)
            for fault in self._faults:
                if fault.times > 0 and fault.when(seen):
                    fault.times -= 1
                    return fault
        return None

    def _served(self, seen: Seen, amount: int) -> None:
        with self._lock:
            seen.served += amount


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        proxy: S3Faults = self.server.faults
        self.close_connection = True
        body = self._request_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body is not None and "Transfer-Encoding" in self.headers:
            headers["Content-Length"] = str(len(body))
        seen = Seen(self.command, urllib.parse.urlsplit(self.path).path, headers)
        fault = proxy._take(seen)
        if fault is not None and fault.kind == "fail":
            self._error(seen, fault.status)
            return
        upstream = http.client.HTTPConnection(*proxy._upstream, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                upstream.putheader(name, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            self._relay(proxy, seen, response, fault)
        finally:
            upstream.close()

    def _relay(self, proxy: S3Faults, seen: Seen, response, fault: _Fault | None) -> None:
        length = response.getheader("Content-Length")
        data = None if length is not None or self.command == "HEAD" else response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP | _OWN:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)) if data is not None else length or "0")
        self.send_header("Connection", "close")
        self.end_headers()
        seen.status = response.status
        if self.command == "HEAD":
            return
        cut = fault.after if fault is not None and fault.kind == "drop" else None
        flip = fault.after if fault is not None and fault.kind == "corrupt" else None
        source = iter([data]) if data is not None else iter(lambda: response.read(CHUNK), b"")
        try:
            self._stream(proxy, seen, source, fault, cut, flip)
        except (BrokenPipeError, ConnectionResetError):
            seen.status = 0  # the client hung up first (killed, or gave up)

    def _stream(self, proxy: S3Faults, seen: Seen, source, fault: _Fault | None, cut, flip) -> None:
        sent = 0
        for chunk in source:
            if cut is not None and sent + len(chunk) >= cut:
                chunk = chunk[: cut - sent]
            if flip is not None and sent <= flip < sent + len(chunk):
                chunk = bytearray(chunk)
                chunk[flip - sent] ^= 0xFF
            self.wfile.write(chunk)
            sent += len(chunk)
            proxy._served(seen, len(chunk))
            if cut is not None and sent >= cut:
                self.wfile.flush()
                fault.reached.set()
                if fault.hold is not None:
                    fault.hold.wait(proxy._hold_timeout)
                seen.status = 0
                self._hang_up()
                return

    def _hang_up(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client went first

    def _error(self, seen: Seen, status: int) -> None:
        code, message = ERRORS[status]
        request_id = uuid.uuid4().hex[:16].upper()
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>s3-faults</HostId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Content-Length", str(len(xml)))
        self.send_header("Connection", "close")
        self.end_headers()
        seen.status = status
        if self.command != "HEAD":
            self.wfile.write(xml)

    def _request_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

    def log_message(self, format, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's signature)
        pass
