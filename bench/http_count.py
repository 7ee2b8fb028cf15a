"""A counting HTTP proxy for bench/launch_speed.py: forwards every request to the moto server and
records which AWS operation it was, so the benchmark can say how many calls each submitter made.

It is used only for one extra, untimed launch per submitter; the timed launches talk to moto directly.
The service comes from the SigV4 credential scope, the operation from X-Amz-Target (JSON protocol),
``Action=`` (query protocol) or, for S3, from the method and the path.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

S3_OPS = {
    ("HEAD", "object"): "HeadObject", ("PUT", "object"): "PutObject", ("GET", "object"): "GetObject",
    ("HEAD", "bucket"): "HeadBucket", ("PUT", "bucket"): "CreateBucket", ("GET", "bucket"): "ListObjects",
    ("GET", "service"): "ListBuckets",
}  # fmt: skip
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


def operation(method: str, path: str, headers, body: bytes) -> str:
    """'service Operation', e.g. 'sagemaker CreateTrainingJob' or 's3 PutObject'."""
    scope = (headers.get("Authorization") or "").partition("Credential=")[2].split(",")[0].split("/")
    service = scope[3] if len(scope) > 3 else "?"
    target = headers.get("X-Amz-Target")
    if target:
        return f"{service} {target.rpartition('.')[2]}"
    if body[:7] == b"Action=":
        return f"{service} {parse_qs(body.decode(errors='replace')).get('Action', ['?'])[0]}"
    url = urlsplit(path)
    parts = url.path.lstrip("/").split("/", 1)
    kind = "object" if len(parts) > 1 and parts[1] else "bucket" if parts[0] else "service"
    query = "?" + ",".join(sorted(k for k in parse_qs(url.query, keep_blank_values=True))) if url.query else ""
    return f"{service} {S3_OPS.get((method, kind), f'{method} {kind}') if not query else f'{method} {kind}{query}'}"


class CountingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = urlsplit(upstream).netloc
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self) -> Counter[str]:
        """The calls counted since the last take()."""
        with self.lock:
            calls, self.calls = self.calls, Counter()
        return calls


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as with moto itself; also answers Expect: 100-continue

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self) -> None:
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        label = operation(self.command, self.path, self.headers, body)
        with self.server.lock:
            self.server.calls[label + (f" ({answer.status})" if answer.status >= 400 else "")] += 1
        self.send_response_only(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP and (key.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, *args) -> None:  # quiet
        pass
