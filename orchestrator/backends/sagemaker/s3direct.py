"""S3 listings and GETs for `dl pull` without botocore's per-request machinery.

A pull of a few hundred checkpoints spent ~1.5 ms of CPU per object inside botocore's
``get_object`` (parameter validation, the endpoint rules, two dozen event handlers, the response
parser) and ~0.08 s on one listing page of 208 keys (parsed twice, once to look for an error
hidden in a 200, then for real, with a timestamp per key that dl never reads). Here a GET costs
~0.7 ms and that listing page ~0.01 s (bench/README.md, "Pull speed").

Nothing about *where* and *how* requests go is decided here. It all comes from the botocore
client that ``Aws`` made: the bucket's URL (botocore's endpoint rules resolve it, through a
presigned URL that is never sent), the credentials (the session's chain, frozen per request, so
temporary ones refresh as botocore would refresh them), the signer (botocore's SigV4 for S3),
and the HTTP session (proxies, TLS verification and CA bundle, timeouts, connection pool).

Only the plain answer is handled here: 200 with the expected length (206 for a continued
object), a listing that parses. Anything else (an error status, a redirect to another region,
a dropped connection, a response that does not add up) makes these functions return None,
and the caller repeats the request through the botocore client, which retries with back-off,
follows redirects and raises the errors that ``aws.translate`` turns into messages. A status
that concerns the whole bucket (a redirect, 400, 401, 403) sends the rest of the pull through
botocore too.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from urllib.parse import quote, unquote_plus, urlencode

# S3's full-object checksums that the standard library can compute, in botocore's order of
# preference. CRC32C and CRC64NVME need awscrt; for those the caller checks the ETag's MD5.
_CHECKSUMS = ("crc32", "sha1", "sha256")
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_BUCKET_WIDE = {301, 302, 307, 308, 400, 401, 403}


class DirectS3:
    """Direct requests to S3, made and authorised as ``client`` would make them (``client``
    stays available, as ``.client``, for everything these do not handle)."""

    def __init__(self, client, credentials) -> None:
        self.client = client
        self._credentials = credentials
        self._region = client.meta.region_name
        self._http = client._endpoint.http_session  # the client's own: proxies, TLS, pool, timeouts
        self._bases: dict[str, str | None] = {}
        from botocore import __version__

        self._agent = f"dl botocore/{__version__}"

    @classmethod
    def for_client(cls, client, credentials) -> DirectS3 | None:
        """None when requests cannot be made the same way (no credentials, no HTTP session)."""
        if credentials is None or getattr(getattr(client, "_endpoint", None), "http_session", None) is None:
            return None
        return cls(client, credentials)

    # -- requests ------------------------------------------------------------------------------

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int, str]] | None:
        """(key, size, ETag) of every object under ``prefix``, or None: list through botocore."""
        base = self._base(bucket)
        if base is None:
            return None
        found, token = [], None
        while True:
            query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
            if token:
                query["continuation-token"] = token
            url = base + "?" + urlencode(query, quote_via=quote, safe="~")
            response = self._send(bucket, url, {})
            if response is None:
                return None
            try:
                page = _parse_listing(response.raw.read())
            except Exception:  # a dropped connection, or XML that is not a listing: botocore's turn
                response.raw.close()
                return None
            if page is None:
                return None
            items, token = page
            found += items
            if token is None:
                return found

    def get_object(self, *, Bucket: str, Key: str, IfMatch: str, Range: str | None = None) -> dict:
        """``client.get_object`` for the arguments `dl pull` uses: {"Body": body}, the body as
        botocore's (``read``, ``close``, FlexibleChecksumError at the end on a checksum mismatch).
        Direct when the answer is the plain one, else through botocore."""
        body = self._get(Bucket, Key, IfMatch, Range)
        if body is None:
            kwargs = {"Bucket": Bucket, "Key": Key, "IfMatch": IfMatch} | ({"Range": Range} if Range else {})
            return self.client.get_object(**kwargs)
        return {"Body": body}

    def _get(self, bucket: str, key: str, if_match: str, byte_range: str | None) -> DirectBody | None:
        base = self._base(bucket)
        offset = _range_start(byte_range) if byte_range else 0
        if base is None or offset is None or _dot_segment(key):
            return None  # (dot segments would be normalised away on the way out)
        headers = {"If-Match": if_match}
        if byte_range:
            headers["Range"] = byte_range
        else:
            headers["x-amz-checksum-mode"] = "ENABLED"
        response = self._send(
            bucket, base.rstrip("/") + "/" + quote(key, safe="/~"), headers, 206 if byte_range else 200
        )
        if response is None:
            return None
        found = response.headers
        length = found.get("content-length", "")
        if not length.isdigit() or (byte_range and not found.get("content-range", "").startswith(f"bytes {offset}-")):
            response.raw.close()
            return None
        return DirectBody(response.raw, int(length), None if byte_range else _checksum(found))

    # -- plumbing ------------------------------------------------------------------------------

    def _base(self, bucket: str) -> str | None:
        """The bucket's URL as the client's endpoint rules resolve it: ``https://BUCKET.s3.REGION...``
        with a trailing slash, or path style ``https://HOST/BUCKET`` (as for an endpoint URL)."""
        if bucket not in self._bases:
            base = None
            if ":" not in bucket and not bucket.endswith("--x-s3"):  # ARNs, S3 Express: other auth
                try:
                    presigned = self.client.generate_presigned_url("head_bucket", Params={"Bucket": bucket})
                    base = presigned.split("?", 1)[0]
                except Exception:
                    base = None
            self._bases[bucket] = base
        return self._bases[bucket]

    def _send(self, bucket: str, url: str, headers: dict, expected: int = 200):
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        try:
            request = AWSRequest("GET", url, headers={"User-Agent": self._agent, **headers})
            S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(request)
            prepared = request.prepare()
            prepared.stream_output = True
            response = self._http.send(prepared)
        except Exception:  # no connection, a timeout, credentials that failed to refresh: botocore's turn
            return None
        if response.status_code != expected:
            response.raw.close()
            if response.status_code in _BUCKET_WIDE:
                self._bases[bucket] = None
            return None
        return response


class DirectBody:
    """A GET's body, read as botocore's: IncompleteReadError when the connection ends before
    ``length`` bytes, FlexibleChecksumError at the end when S3 sent a full-object checksum
    (``checksummed``) and the bytes differ from it."""

    def __init__(self, raw, length: int, checksum: tuple[str, str] | None) -> None:
        self._raw = raw
        self._left = self._length = length
        self.checksummed = checksum is not None
        self._algorithm, self._expected = checksum or (None, None)
        self._crc = 0
        self._hash = hashlib.new(self._algorithm) if self._algorithm in ("sha1", "sha256") else None

    def read(self, amount: int) -> bytes:
        chunk = self._raw.read(amount)
        if chunk:
            self._left -= len(chunk)
            if self._hash is not None:
                self._hash.update(chunk)
            elif self._algorithm == "crc32":
                self._crc = zlib.crc32(chunk, self._crc)
            return chunk
        from botocore.exceptions import FlexibleChecksumError, IncompleteReadError

        if self._left:
            raise IncompleteReadError(actual_bytes=self._length - self._left, expected_bytes=self._length)
        if self._algorithm is not None:
            digest = self._hash.digest() if self._hash is not None else self._crc.to_bytes(4, "big")
            got = base64.b64encode(digest).decode()
            if got != self._expected:
                raise FlexibleChecksumError(
                    error_msg=f"Expected checksum {self._expected} did not match calculated checksum: {got}"
                )
        return chunk

    def close(self) -> None:
        """Back to the pool when read to its end, else the connection is closed (it holds the rest)."""
        if self._left:
            self._raw.close()
        else:
            self._raw.release_conn()


def _checksum(headers) -> tuple[str, str] | None:
    """(algorithm, base64 value) of the object's full-object checksum, when S3 sent one this can check."""
    for algorithm in _CHECKSUMS:
        value = headers.get(f"x-amz-checksum-{algorithm}")
        if value and "-" not in value:  # "...-N": a checksum of part checksums, not of the bytes
            return algorithm, value
    return None


def _dot_segment(key: str) -> bool:
    return any(part in (".", "..") for part in key.split("/"))


def _parse_listing(body: bytes) -> tuple[list[tuple[str, int, str]], str | None] | None:
    """A ListObjectsV2 page: ([(key, size, ETag)], the next continuation token or None), or None."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(body)
    if root.tag != f"{_NS}ListBucketResult":
        return None
    encoded = root.findtext(f"{_NS}EncodingType") == "url"
    items = []
    for entry in root.iterfind(f"{_NS}Contents"):
        key, size, etag = (entry.findtext(f"{_NS}{name}") for name in ("Key", "Size", "ETag"))
        if key is None or size is None or not size.isdigit():
            return None
        items.append((unquote_plus(key) if encoded else key, int(size), (etag or "").strip('"')))
    truncated = root.findtext(f"{_NS}IsTruncated") == "true"
    token = root.findtext(f"{_NS}NextContinuationToken")
    if truncated and not token:
        return None
    return items, token if truncated else None


def _range_start(byte_range: str) -> int | None:
    """N of "bytes=N-" (the only range a pull asks for)."""
    start = byte_range.removeprefix("bytes=").removesuffix("-")
    return int(start) if byte_range.startswith("bytes=") and byte_range.endswith("-") and start.isdigit() else None
