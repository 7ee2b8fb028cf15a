"""`dl pull` (and the package upload of `dl launch`) under the faults real S3 produces.

dl talks to moto on 127.0.0.1 through tests/s3_faults.py, a proxy that counts the body bytes it
serves and plays what moto cannot: 500 InternalError and 503 SlowDown answers, connections that
drop mid-body, and a pull killed halfway through a large object.

moto cannot run a SageMaker training job, so ``cloud_run`` stands in for a finished one: it
records the run in the store as `dl launch` and a completed job leave it, and puts the job's
outputs (checkpoints under the run's checkpoint prefix, model.tar.gz where SageMaker writes it)
into moto's S3 itself. Checkpoints are real zips, as torch.save writes them, because pull
checks every .ckpt as a zip archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from orchestrator import api, pulls
from orchestrator.backends.sagemaker import transfer
from orchestrator.store import Run, RunStatus, open_store
from tests.conftest import BUCKET, REGION, invoke, wait_for
from tests.s3_faults import S3Faults, gets, puts

RUN_ID = "mnist-20261125-1200-f4a1"
PREFIX = f"dl/runs/{RUN_ID}"
MODEL_KEY = f"{PREFIX}/output/{RUN_ID}/output/model.tar.gz"
MiB = 1024 * 1024


def checkpoint(payload: bytes) -> bytes:
    """A zip laid out as torch.save writes one (a pickle and one stored tensor blob)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", payload)
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big() -> bytes:
    """A 48 MiB checkpoint of random bytes: large enough that continuing a pull matters."""
    return checkpoint(random.Random(7).randbytes(48 * MiB))


@pytest.fixture
def s3(aws, moto_endpoint):
    """The test's own client, straight to moto: never through the proxy, so never counted."""
    return aws.client("s3", endpoint_url=moto_endpoint)


@pytest.fixture
def faults(aws, moto_endpoint, monkeypatch):
    """dl reaches moto only through the fault-injecting proxy."""
    with S3Faults(moto_endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy


def cloud_run(s3, checkpoints: dict[str, bytes], model: bool = True) -> None:
    """A finished SageMaker run RUN_ID with these checkpoints and (unless not ``model``) a
    model.tar.gz in moto's S3."""
    for name, body in checkpoints.items():
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/checkpoints/{name}", Body=body)
    if model:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            for name, data in (("model.ckpt", checkpoint(b"weights" * 100)), ("dl_model.json", b'{"job": "mnist"}')):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=archive.getvalue())
    now = time.time()
    store = open_store()
    store.insert(
        Run(
            id=RUN_ID,
            job="mnist",
            target="sagemaker",
            status=RunStatus.COMPLETED,
            created_at=now - 900,
            started_at=now - 880,
            ended_at=now - 60,
            checkpoint_uri=f"s3://{BUCKET}/{PREFIX}/checkpoints",
            model_uri=f"s3://{BUCKET}/{MODEL_KEY}",
            output_uri=f"s3://{BUCKET}/{PREFIX}/output",
            backend_state={"region": REGION},
        )
    )
    store.close()


def small_checkpoints(count: int = 4) -> dict[str, bytes]:
    rng = random.Random(count)
    names = ["best.ckpt", "last.ckpt"] + [f"epoch={i}.ckpt" for i in range(count - 2)]
    return {name: checkpoint(rng.randbytes(64 * 1024)) for name in names}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[Path]:
    """Part files and their ETag markers: a finished pull leaves none."""
    return [p for p in folder.rglob(".*") if p.name.endswith((".dlpart", ".etag"))]


def manifest(folder: Path) -> dict:
    return json.loads((folder / pulls.MANIFEST).read_text())


def pull(*args: str):
    result = invoke("pull", RUN_ID, *args)
    assert result.exit_code == 0, result.output
    return result


# -- a pull killed halfway continues where it stopped ---------------------------------------


def test_a_killed_pull_fetches_only_the_rest(faults, s3, tmp_path, big):
    cloud_run(s3, {"best.ckpt": big})
    dest = tmp_path / "pulled"
    part = dest / "checkpoints" / ".best.ckpt.dlpart"
    half = len(big) // 2
    # The proxy serves the first half of best.ckpt, then holds the connection open: the pull is
    # SIGKILLed while it waits there, as a user's Ctrl-\ or an OOM kill would end it.
    cut = faults.cut_once(gets("/checkpoints/best.ckpt"), at=half, hold=True)
    dl = Path(sys.executable).parent / "dl"
    proc = subprocess.Popen(
        [str(dl), "pull", RUN_ID, "--to", str(dest)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for(cut.reached.is_set, timeout=30, what="the proxy to serve half of best.ckpt")
        wait_for(lambda: part.exists() and part.stat().st_size > half - transfer.CHUNK, timeout=30, what="the part")
    finally:
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=30)[0].decode()
        cut.release()
    assert proc.returncode == -signal.SIGKILL, output
    assert not (dest / "checkpoints" / "best.ckpt").exists()
    kept = part.stat().st_size
    assert half - transfer.CHUNK < kept <= half

    faults.reset()
    result = pull("--to", str(dest))
    assert "continued" in result.stdout, result.stdout
    # Only the remainder came over the wire, in one ranged GET from the part's end.
    assert faults.served("GET", "/checkpoints/best.ckpt") == len(big) - kept
    assert [r.range for r in faults.requests("GET", "/checkpoints/best.ckpt")] == [f"bytes={kept}-"]
    pulled = (dest / "checkpoints" / "best.ckpt").read_bytes()
    assert sha256(pulled) == sha256(big)
    assert leftovers(dest) == []
    assert manifest(dest)["checkpoints/best.ckpt"]["sha256"] == sha256(big)


def test_a_part_of_an_older_version_is_not_continued(faults, s3, tmp_path):
    old = checkpoint(random.Random(1).randbytes(9 * MiB))
    new = checkpoint(random.Random(2).randbytes(9 * MiB))
    cloud_run(s3, {"best.ckpt": new})
    # What a pull of the older version left when it was killed: half a part and its ETag.
    folder = tmp_path / "pulled" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / ".best.ckpt.dlpart").write_bytes(old[: len(old) // 2])
    (folder / ".best.ckpt.etag").write_text(hashlib.md5(old).hexdigest())
    result = pull("--to", str(tmp_path / "pulled"))
    assert "continued" not in result.stdout
    assert faults.requests("GET", "/checkpoints/best.ckpt")[0].range is None
    assert faults.served("GET", "/checkpoints/best.ckpt") == len(new)
    assert (folder / "best.ckpt").read_bytes() == new
    assert leftovers(tmp_path / "pulled") == []


# -- S3 answering 500 / 503 ---------------------------------------------------------------------


def test_pull_retries_500_and_503_slowdown(faults, s3, tmp_path):
    objects = small_checkpoints(6)
    cloud_run(s3, objects)
    faults.fail(2, gets(".ckpt"), status=503)
    faults.fail(2, gets(".ckpt"), status=500)
    dest = tmp_path / "pulled"
    pull("--all", "--to", str(dest))
    statuses = [r.status for r in faults.requests("GET", ".ckpt")]
    assert statuses.count(503) == 2 and statuses.count(500) == 2, statuses
    for name, body in objects.items():
        assert (dest / "checkpoints" / name).read_bytes() == body, name
    assert leftovers(dest) == []
    assert {f"checkpoints/{name}" for name in objects} <= set(manifest(dest))


def test_launch_retries_500_and_503_on_the_package_upload(faults, s3):
    package_puts = puts(f"/{BUCKET}/dl/packages/")
    faults.fail(1, package_puts, status=503)
    faults.fail(1, package_puts, status=500)
    result = invoke("launch", "mnist", "--target", "sagemaker", "--gpu", "T4", "--json")
    assert result.exit_code == 0, result.output
    uploads = [r for r in faults.requests("PUT") if r.path.startswith(f"/{BUCKET}/dl/packages/")]
    assert [r.status for r in uploads] == [503, 500, 200]
    # What landed is the whole package: a tarball with the job's entry point in it.
    key = uploads[-1].path.removeprefix(f"/{BUCKET}/")
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        assert "dl_entry.py" in archive.getnames()
    assert hashlib.sha256(body).hexdigest() == key.split("/")[-2]  # content-addressed by its sha256


# -- connections dropped mid-body -------------------------------------------------------------


def test_a_dropped_connection_continues_from_the_byte_it_reached(faults, s3, tmp_path, big):
    cloud_run(s3, {"best.ckpt": big})
    faults.drop(3, gets("/checkpoints/best.ckpt"), after=10 * MiB + 12345)
    dest = tmp_path / "pulled"
    result = api.pull(RUN_ID, to=dest)
    requests = faults.requests("GET", "/checkpoints/best.ckpt")
    assert [r.status for r in requests] == [0, 0, 0, 206]  # three cut, the fourth finished
    # Each attempt asked for the bytes after those already kept, never from the start again.
    starts = [0] + [int(r.range.removeprefix("bytes=").rstrip("-")) for r in requests[1:]]
    assert starts == sorted(set(starts)) and starts[1] > 0, starts
    served = faults.served("GET", "/checkpoints/best.ckpt")
    assert served < 2 * len(big)
    assert served <= len(big) + 3 * transfer.CHUNK  # at most a chunk lost per cut
    assert sha256((dest / "checkpoints" / "best.ckpt").read_bytes()) == sha256(big)
    assert manifest(dest)["checkpoints/best.ckpt"]["sha256"] == sha256(big)
    assert leftovers(dest) == []
    assert result.backoffs == 0, "attempts that bring new bytes are retried at once, without backing off"


def test_attempts_that_bring_nothing_back_off_each_time(faults, s3, tmp_path):
    body = checkpoint(random.Random(5).randbytes(9 * MiB))
    cloud_run(s3, {"best.ckpt": body}, model=False)
    faults.drop(2, gets("/checkpoints/best.ckpt"), after=0)  # two bodies cut before their first byte
    dest = tmp_path / "pulled"
    result = api.pull(RUN_ID, to=dest)
    assert [r.status for r in faults.requests("GET", "/checkpoints/best.ckpt")] == [0, 0, 200]
    assert result.backoffs == 2, "a pause before each attempt after one that brought nothing"
    assert (dest / "checkpoints" / "best.ckpt").read_bytes() == body


def test_a_body_that_keeps_breaking_off_is_given_up_and_its_part_kept(faults, s3, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "ATTEMPTS", 2)  # give up after two attempts in a row that bring nothing
    body = checkpoint(random.Random(3).randbytes(9 * MiB))
    cloud_run(s3, {"best.ckpt": body}, model=False)
    faults.drop(1, gets("/checkpoints/best.ckpt"), after=4 * MiB)
    faults.drop(2, gets("/checkpoints/best.ckpt"), after=0)
    dest = tmp_path / "pulled"
    result = invoke("pull", RUN_ID, "--to", str(dest))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "best.ckpt kept failing" in lines[0] and "continues where it stopped" in lines[0]
    assert not (dest / "checkpoints" / "best.ckpt").exists()
    assert (dest / "checkpoints" / ".best.ckpt.dlpart").stat().st_size == 4 * MiB

    faults.reset()
    pull("--to", str(dest))
    assert faults.served("GET", "/checkpoints/best.ckpt") == len(body) - 4 * MiB
    assert (dest / "checkpoints" / "best.ckpt").read_bytes() == body


def test_bytes_corrupted_on_the_way_are_caught_and_fetched_again(faults, s3, tmp_path):
    body = checkpoint(random.Random(4).randbytes(9 * MiB))
    cloud_run(s3, {"best.ckpt": body}, model=False)
    # A whole-object GET carries S3's CRC32, which the pull checks at the end: the engine starts over.
    faults.corrupt(1, gets("/checkpoints/best.ckpt"), at=5 * MiB)
    dest = tmp_path / "pulled"
    pull("--to", str(dest))
    got = faults.requests("GET", "/checkpoints/best.ckpt")
    assert [(r.range, r.agent) for r in got] == [(None, "dl"), (None, "dl")]
    assert (dest / "checkpoints" / "best.ckpt").read_bytes() == body

    # A continued (ranged) GET carries no checksum: the MD5 of the whole file against the ETag
    # catches the flipped byte, and the bad file never lands.
    (dest / "checkpoints" / "best.ckpt").unlink()
    faults.drop(1, gets("/checkpoints/best.ckpt"), after=4 * MiB)
    faults.corrupt(1, gets("/checkpoints/best.ckpt"), at=1 * MiB)
    result = invoke("pull", RUN_ID, "--to", str(dest))
    assert result.exit_code == 1 and "MD5 differs" in result.stderr, result.output
    assert not (dest / "checkpoints" / "best.ckpt").exists() and leftovers(dest) == []
    pull("--to", str(dest))
    assert (dest / "checkpoints" / "best.ckpt").read_bytes() == body


# -- nothing changed / one object changed -----------------------------------------------------


def test_a_second_pull_skips_unchanged_files_and_fetches_a_changed_one(faults, s3, tmp_path):
    objects = small_checkpoints(4)
    cloud_run(s3, objects)
    dest = tmp_path / "pulled"
    pull("--all", "--to", str(dest))

    faults.reset()
    again = pull("--all", "--to", str(dest))
    assert "Pulled 0 files" in again.stdout and "5 already here and unchanged" in again.stdout, again.stdout
    assert faults.requests("GET", ".ckpt") == [] and faults.requests("GET", ".tar.gz") == []

    changed = checkpoint(b"a new last checkpoint" * 1000)
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/checkpoints/last.ckpt", Body=changed)
    faults.reset()
    third = pull("--all", "--to", str(dest))
    fetched = {r.path.rsplit("/", 1)[1] for r in faults.requests("GET") if r.path.endswith((".ckpt", ".tar.gz"))}
    assert fetched == {"last.ckpt"}
    assert "4 already here and unchanged" in third.stdout, third.stdout
    assert (dest / "checkpoints" / "last.ckpt").read_bytes() == changed
    assert manifest(dest)["checkpoints/last.ckpt"]["sha256"] == sha256(changed)
    for name in set(objects) - {"last.ckpt"}:
        assert (dest / "checkpoints" / name).read_bytes() == objects[name]


def test_two_checkpoints_with_one_file_name_keep_their_paths(faults, s3, tmp_path):
    top, nested = checkpoint(b"top" * 5000), checkpoint(b"nested" * 5000)
    cloud_run(s3, {"best.ckpt": top, "sub/best.ckpt": nested, "last.ckpt": checkpoint(b"last")}, model=False)
    dest = tmp_path / "pulled"

    first = pull("--all", "--to", str(dest))
    again = pull("--all", "--to", str(dest))

    assert "Pulled 3 files" in first.stdout, first.stdout
    assert (dest / "checkpoints" / "best.ckpt").read_bytes() == top
    assert (dest / "checkpoints" / "sub" / "best.ckpt").read_bytes() == nested
    assert manifest(dest)["checkpoints/sub/best.ckpt"]["sha256"] == sha256(nested)
    assert "3 already here and unchanged" in again.stdout, again.stdout
    assert leftovers(dest) == []
    best = pull("--to", str(tmp_path / "best"))  # --best is the top-level best.ckpt, not sub/'s
    assert "Pulled 1 file" in best.stdout and (tmp_path / "best" / "checkpoints" / "best.ckpt").read_bytes() == top


def test_a_plan_with_two_sources_for_one_destination_is_refused(tmp_path):
    from orchestrator.api import PullItem
    from orchestrator.backends.base import Artifact
    from orchestrator.errors import ArtifactError
    from orchestrator.paths import one_source_per_destination

    def item(key: str, dest: str) -> PullItem:
        return PullItem(Artifact(key.rsplit("/", 1)[-1], "checkpoint", f"s3://b/{key}"), tmp_path / dest)

    one_source_per_destination([item("c/best.ckpt", "checkpoints/best.ckpt"), item("c/s/best.ckpt", "s/best.ckpt")],
                               tmp_path)  # fmt: skip
    with pytest.raises(ArtifactError, match="would both be written to") as info:
        one_source_per_destination([item("c/best.ckpt", "x/best.ckpt"), item("c/s/best.ckpt", "x/best.ckpt")], tmp_path)
    assert "s3://b/c/best.ckpt and s3://b/c/s/best.ckpt" in info.value.message
    with pytest.raises(ArtifactError, match="would be written outside"):
        one_source_per_destination([item("c/../../x.ckpt", "checkpoints/../../x.ckpt")], tmp_path)


def test_a_file_a_power_cut_shortened_is_fetched_again(faults, s3, tmp_path):
    """Parts are not fsynced: after a power cut a file written just before may be shorter (ext4,
    xfs and btrfs lose its tail, they do not fill it with other bytes). The next pull sees its
    size differ from the manifest's and fetches it again."""
    objects = small_checkpoints(3)
    cloud_run(s3, objects, model=False)
    dest = tmp_path / "pulled"
    pull("--all", "--to", str(dest))
    shortened = dest / "checkpoints" / "last.ckpt"
    with open(shortened, "r+b") as handle:
        handle.truncate(4096)

    faults.reset()
    again = pull("--all", "--to", str(dest))
    assert "Pulled 1 file" in again.stdout and "2 already here and unchanged" in again.stdout, again.stdout
    assert faults.served("GET", "/checkpoints/last.ckpt") == len(objects["last.ckpt"])
    assert faults.requests("GET", "/checkpoints/best.ckpt") == []
    assert shortened.read_bytes() == objects["last.ckpt"]


# -- a corrupt checkpoint on S3 ---------------------------------------------------------------


def test_a_corrupt_checkpoint_is_named_and_never_replaces_a_good_file(faults, s3, tmp_path):
    good = checkpoint(b"good weights" * 5000)
    cloud_run(s3, {"best.ckpt": good})
    dest = tmp_path / "pulled"
    pull("--to", str(dest))
    etag = manifest(dest)["checkpoints/best.ckpt"]["etag"]

    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/checkpoints/best.ckpt", Body=b"not a zip at all " * 4000)
    result = invoke("pull", RUN_ID, "--to", str(dest))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "best.ckpt" in lines[0] and "corrupt" in lines[0], result.stderr
    assert (dest / "checkpoints" / "best.ckpt").read_bytes() == good
    assert manifest(dest)["checkpoints/best.ckpt"]["etag"] == etag  # so the next pull looks again
    assert leftovers(dest) == []


def test_checkpoint_check_reads_every_crc_unless_the_source_checksum_matched(tmp_path):
    """Bytes that matched S3's checksum are what the run wrote: the structure is checked, not every
    CRC again. A copy that nothing checked (a local run's) gets every member's CRC read."""
    from orchestrator.api import verify_checkpoint
    from orchestrator.errors import ArtifactError

    data = bytearray(checkpoint(b"weights" * 1000))
    data[data.index(b"weights") + 10] ^= 0xFF  # a flipped bit inside a member: its CRC no longer matches
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt \\(bad entry archive/data/0\\)"):
        verify_checkpoint(flipped, False, name="flipped.ckpt")
    verify_checkpoint(flipped, True)  # the source's checksum vouched for these bytes

    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(checkpoint(b"weights" * 1000)[:-40])  # the end of the central directory is gone
    for source_checked in (False, True):
        with pytest.raises(ArtifactError, match="cut.ckpt is corrupt"):
            verify_checkpoint(cut, source_checked, name="cut.ckpt")


# -- dry run --------------------------------------------------------------------------------------


def test_dry_run_lists_sources_and_destinations_and_transfers_nothing(faults, s3, tmp_path):
    objects = small_checkpoints(3)
    cloud_run(s3, objects)
    dest = tmp_path / "pulled"
    faults.reset()
    result = pull("--all", "--dry-run", "--to", str(dest))
    for name in objects:
        source = f"s3://{BUCKET}/{PREFIX}/checkpoints/{name}"
        assert f"{source} -> {dest / 'checkpoints' / name}" in result.stdout, result.stdout
    assert f"s3://{BUCKET}/{MODEL_KEY} -> {dest / 'model' / 'model.tar.gz'}" in result.stdout
    assert "Would pull 4 files" in result.stdout
    assert faults.served("GET", ".ckpt") == 0 and faults.served("GET", ".tar.gz") == 0
    assert not dest.exists()


# -- the requests: dl's botocore client, and nothing else ------------------------------------------
# A pull lists and GETs through the S3 client aws.py makes (User-Agent "Botocore/... app/dl"):
# botocore signs, retries and explains. The fault proxy sees every request, retries included.


def test_a_pull_lists_and_gets_through_dls_client(faults, s3, tmp_path):
    objects = small_checkpoints(6)
    cloud_run(s3, objects)
    dest = tmp_path / "pulled"
    pull("--all", "--to", str(dest))
    listings = faults.requests("GET", f"/{BUCKET}")  # ListObjectsV2, path style: GET /bucket?list-type=2
    fetched = faults.requests("GET", ".ckpt") + faults.requests("GET", ".tar.gz")
    assert len(listings) == 1 and len(fetched) == len(objects) + 1
    assert {(r.agent, r.status) for r in listings + fetched} == {("dl", 200)}
    for name, body in objects.items():
        assert (dest / "checkpoints" / name).read_bytes() == body
        assert manifest(dest)[f"checkpoints/{name}"]["sha256"] == sha256(body)
    assert (dest / "model" / "model.ckpt").is_file() and leftovers(dest) == []


def pull_three(faults, s3, tmp_path) -> list:
    """`dl pull --all` of a run with three small checkpoints (no model); checks each arrived byte
    for byte and returns the listing and GETs the proxy saw."""
    objects = small_checkpoints(3)
    cloud_run(s3, objects, model=False)
    dest = tmp_path / "pulled"
    pull("--all", "--to", str(dest))
    for name, body in objects.items():
        assert (dest / "checkpoints" / name).read_bytes() == body
    made = faults.requests("GET", f"/{BUCKET}") + faults.requests("GET", ".ckpt")
    assert len(made) == 1 + len(objects)
    return made


def test_a_pull_makes_one_listing_and_one_get_per_object_and_nothing_else(faults, s3, tmp_path):
    made = pull_three(faults, s3, tmp_path)
    every = faults.requests("GET") + faults.requests("HEAD")
    assert {r.agent for r in every} == {"dl"} and sum(faults.counts().values()) == len(every)
    # Beside the HEADs that look for the model and output archives (this run has none): nothing.
    assert [r for r in every if r.method == "GET"] == made


def test_pull_requests_carry_temporary_credentials_session_token(faults, s3, tmp_path, monkeypatch):
    """Credentials from STS, SSO or a role come with a session token; a request signed without it
    is refused by S3. (moto accepts any token: what is checked is that it is sent, and signed.)"""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FQoGZXIvYXdzEXAMPLETOKEN")
    made = pull_three(faults, s3, tmp_path)
    assert {r.agent for r in made} == {"dl"}
    for request in made:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["x-amz-security-token"] == "FQoGZXIvYXdzEXAMPLETOKEN"
        assert "x-amz-security-token" in headers["authorization"].split("SignedHeaders=")[1].split(",")[0]


def test_a_get_that_fails_is_made_again_by_botocore(faults, s3, tmp_path):
    body = checkpoint(b"weights" * 3000)
    cloud_run(s3, {"best.ckpt": body}, model=False)
    faults.fail(1, gets("/checkpoints/best.ckpt"), status=503)
    dest = tmp_path / "pulled"
    pull("--to", str(dest))
    got = faults.requests("GET", "/checkpoints/best.ckpt")
    assert [(r.agent, r.status) for r in got] == [("dl", 503), ("dl", 200)]  # botocore's retry, seen
    assert (dest / "checkpoints" / "best.ckpt").read_bytes() == body


def test_a_403_is_botocores_error_to_explain_and_the_next_object_still_comes(faults, s3):
    """A status about the whole bucket (403, 400, a redirect to its region) is not retried: it is
    botocore's error, which aws.translate turns into a message; the next request is made as usual."""
    from orchestrator.backends.sagemaker.aws import Aws

    etags = {}
    for name in ("one.bin", "two.bin"):
        etags[name] = s3.put_object(Bucket=BUCKET, Key=f"dl/{name}", Body=name.encode() * 100)["ETag"]
    client = Aws(REGION).client("s3")
    faults.fail(1, gets("/dl/one.bin"), status=403)
    with pytest.raises(Exception, match="403|AccessDenied|Forbidden"):
        client.get_object(Bucket=BUCKET, Key="dl/one.bin", IfMatch=etags["one.bin"])
    answer = client.get_object(Bucket=BUCKET, Key="dl/two.bin", IfMatch=etags["two.bin"])
    assert answer["Body"].read() == b"two.bin" * 100
    seen = [(r.path.rsplit("/", 1)[1], r.agent, r.status) for r in faults.requests("GET", ".bin")]
    assert seen == [("one.bin", "dl", 403), ("two.bin", "dl", 200)]


def test_keys_that_need_escaping_are_listed_and_fetched(faults, s3, tmp_path):
    names = ["a b.ckpt", "plus+sign.ckpt", "percent%41.ckpt", "üñï €.ckpt", "eq=1,x;y&z.ckpt", "t~'q'(1).ckpt"]
    objects = {name: checkpoint(name.encode() * 500) for name in names}
    cloud_run(s3, objects, model=False)
    dest = tmp_path / "pulled"
    pull("--all", "--to", str(dest))
    for name, body in objects.items():
        assert (dest / "checkpoints" / name).read_bytes() == body, name
    made = faults.requests("GET")
    assert len(made) == 1 + len(names) and {(r.agent, r.status) for r in made} == {("dl", 200)}


def test_a_listing_of_several_pages_is_the_one_botocore_makes(faults, s3):
    """S3 answers at most 1000 keys a page; the rest come with the continuation token."""
    from orchestrator.backends.sagemaker.aws import Aws

    keys = [f"dl/many/{i:04d}{' +%' if i % 97 == 0 else ''}.ckpt" for i in range(1003)]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    s3.put_object(Bucket=BUCKET, Key="dl/many-not-this-prefix.ckpt", Body=b"x")
    listed = Aws(REGION).list_objects(f"s3://{BUCKET}/dl/many")
    botocore_s = [
        (item["Key"], item["Size"], item["ETag"].strip('"'))
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="dl/many/")
        for item in page["Contents"]
    ]
    assert [(o.key, o.size, o.etag) for o in listed] == botocore_s
    assert sorted(o.key for o in listed) == sorted(keys)
    assert [(r.agent, r.status) for r in faults.requests("GET", f"/{BUCKET}")] == [("dl", 200)] * 2


# -- the engine on its own ------------------------------------------------------------------------


def test_an_empty_object_and_a_missing_one(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="dl/empty.json", Body=b"")
    head = s3.head_object(Bucket=BUCKET, Key="dl/empty.json")
    empty = transfer.Transfer(BUCKET, "dl/empty.json", 0, head["ETag"].strip('"'), tmp_path / "out" / "empty.json")
    report = transfer.download_all(s3, [empty], tmp_path / "out")
    assert report.fetched == [empty.dest] and empty.dest.read_bytes() == b""
    assert manifest(tmp_path / "out")["empty.json"]["sha256"] == sha256(b"")

    gone = transfer.Transfer(BUCKET, "dl/gone.ckpt", 10, "0" * 32, tmp_path / "out" / "gone.ckpt")
    with pytest.raises(Exception, match="NoSuchKey|Not Found|404"):
        transfer.download_all(lambda: s3, [gone], tmp_path / "out")
    assert leftovers(tmp_path / "out") == [] and not gone.dest.exists()
