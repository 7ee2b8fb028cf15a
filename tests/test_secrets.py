"""Secrets never ride along with the code: by name, by content, through links; and the package cache
is what its name says.

Every test packages a real job folder under tmp_path with the real code. The tokens below are
made up, in the shapes the real services issue (built from pieces, so no scanner flags this file).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from orchestrator import api, scheduling
from orchestrator.client import Client
from orchestrator.errors import PackageError, UsageError
from orchestrator.jobs import load_job
from orchestrator.packaging import build_package, cached_package, extract_package
from orchestrator.secretscan import KIND_NAMES
from tests.conftest import MNIST, REPO, invoke
from tests.test_packaging import all_member_bytes, assert_one_line, build, members, write_job

MARK = "PRIVATE-CONTENT-do-not-ship"


def token(alphabet: str, n: int, seed: str) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
UPPER32 = string.ascii_uppercase + "234567"
B64 = ALNUM + "/+"


def aws_pair(seed: str = "aws") -> tuple[str, str]:
    return "AK" + "IA" + token(UPPER32, 16, seed), token(B64, 39, seed) + "a"


def pem_private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    encoding, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(encoding, fmt, serialization.NoEncryption()).decode()


def openssh_private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    encoding, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH
    return key.private_bytes(encoding, fmt, serialization.NoEncryption()).decode()


def service_account_json() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account", "project_id": "acme-ml", "private_key_id": token("0123456789abcdef", 40, "g"),
        "private_key": pem, "client_email": "trainer@acme-ml.iam.gserviceaccount.com",
    }  # fmt: skip
    return json.dumps(info, indent=2)


# (file, content, kind, line, the secret part that must never be printed)
def _cases():
    key_id, secret = aws_pair()
    gh = token(ALNUM, 36, "gh")
    pat = token(ALNUM + "_", 82, "pat")
    slack = "-".join([token(string.digits, 12, "s1"), token(string.digits, 13, "s2"), token(ALNUM, 24, "s3")])
    hook = "/".join(["T" + token(UPPER32, 8, "h1"), "B" + token(UPPER32, 10, "h2"), token(ALNUM, 24, "h3")])
    pypi = token(ALNUM + "-_", 70, "pypi")
    openai = token(ALNUM, 74, "oa1") + "T3Blbk" + "FJ" + token(ALNUM, 74, "oa2")
    yield (
        "settings_local.py",
        (f'DEBUG = False\nAWS_ACCESS_KEY_ID = "{key_id}"\nAWS_SECRET_ACCESS_KEY = "{secret}"\n'),
        "aws_key_pair",
        2,
        key_id[4:],
    )
    yield (
        "conf/storage.ini",
        (f"[default]\nregion = eu-west-1\naws_secret_access_key = {secret}\n"),
        "aws_secret",
        3,
        secret,
    )
    yield "keys/deploy.txt", "notes\n\n" + pem_private_key(), "private_key", 3, "MH"
    yield "bootstrap.sh", "cat > ~/.ssh/id <<EOF\n" + openssh_private_key() + "EOF\n", "private_key", 2, "b3Bl"
    yield (
        "puttykey.txt",
        ("PuTTY-User-Key-File-" + "3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\n" + token(B64, 44, "pt")),
        "putty_key",
        1,
        token(B64, 44, "pt"),
    )
    yield "acme-ml-3f1c.json", service_account_json(), "gcp_service_account", 2, "MII"
    yield "ci/push.py", 'TOKEN = "gh' + f'p_{gh}"\n', "github", 1, gh
    yield "ci/fine.py", 'TOKEN = "github' + f'_pat_{pat}"\n', "github_pat", 1, pat
    yield (
        "ci/gitlab.yml",
        "variables:\n  T: glpat" + "-" + token(ALNUM, 20, "gl") + "\n",
        "gitlab",
        2,
        token(ALNUM, 20, "gl"),
    )
    yield "notify.py", 'BOT = "xo' + f'xb-{slack}"\n', "slack", 1, slack
    yield "alerts.yaml", "url: https://hooks.sl" + f"ack.com/services/{hook}\n", "slack_webhook", 1, hook
    yield "publish.cfg", "token=np" + "m_" + token(ALNUM, 36, "npm") + "\n", "npm", 1, token(ALNUM, 36, "npm")
    yield "upload.py", "PW = 'py" + "pi-AgEIcHlwaS5vcmc" + pypi + "'\n", "pypi", 1, pypi
    yield "billing.py", "stripe.api_key = 'sk_li" + "ve_" + token(ALNUM, 24, "st") + "'\n", "stripe", 1, "ve_"
    yield "llm.py", "client = OpenAI(api_key='sk-pr" + f"oj-{openai}')\n", "openai", 1, openai[:20]
    yield "claude.py", "KEY = 'sk-an" + "t-api03-" + token(ALNUM + "-_", 95, "an") + "'\n", "anthropic", 1, "api03"
    yield "hub.py", "login(token='h" + "f_" + token(string.ascii_letters, 34, "hf") + "')\n", "huggingface", 1, "f_"
    yield "maps.js", "const KEY = 'AI" + "za" + token(ALNUM + "-_", 35, "gm") + "';\n", "google_api_key", 1, "za"


CASES = list(_cases())


@pytest.mark.parametrize(("rel", "content", "kind", "line", "hidden"), CASES, ids=[c[2] + ":" + c[0] for c in CASES])
def test_a_file_holding_a_credential_is_refused_naming_file_line_and_kind_never_the_secret(
    tmp_path, rel, content, kind, line, hidden
):
    job_dir = write_job(tmp_path / "toy", {rel: content})
    cache = tmp_path / "cache"

    with pytest.raises(PackageError) as info:
        build(job_dir, cache)

    err = info.value
    assert_one_line(err)
    assert f"{rel}:{line} ({KIND_NAMES[kind]})" in err.message
    assert "--allow-secret" in err.hint and ".dlignore" in err.hint
    # neither the secret nor any part of it: every 6-character piece of what follows the fixed prefix
    assert not any(hidden[i : i + 6] in str(err) for i in range(max(1, len(hidden) - 5))), str(err)
    assert not cache.exists() or not any(cache.iterdir())  # nothing was packaged


@pytest.mark.train
def test_the_issue_s_settings_local_py_is_refused_through_the_cli(dl_home, tmp_path):
    job = tmp_path / "mnist"
    shutil.copytree(MNIST, job, ignore=shutil.ignore_patterns("__pycache__"))
    key_id, secret = aws_pair("cli")
    (job / "settings_local.py").write_text(f'AWS_ACCESS_KEY_ID = "{key_id}"\nAWS_SECRET_ACCESS_KEY = "{secret}"\n')

    refused = invoke("launch", str(job), "--local", "--dry-run", "--no-smoke-test")
    assert refused.exit_code == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "settings_local.py:1 (an AWS access key id with its secret)" in refused.stderr
    assert "--allow-secret settings_local.py" in refused.stderr
    assert key_id[4:10] not in refused.output and secret[:6] not in refused.output

    sent = invoke("launch", str(job), "--local", "--dry-run", "--no-smoke-test", "--json",
                  "--allow-secret", "settings_local.py")  # fmt: skip
    assert sent.exit_code == 0, sent.output
    assert "settings_local.py" in [f["name"] for f in json.loads(sent.stdout)["package"]["files"]]


def test_lookalikes_documentation_examples_and_binaries_are_packaged(tmp_path):
    files = {
        "README.md": "Set AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE and\n"
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY (AWS's documentation example).\n",
        "pem.py": 'HEADER = "-----BEGIN RSA PRIVATE KEY-----"  # what a key file starts with\n',
        "hashes.txt": "AKIA" + "X" * 16 + " " + "0123456789abcdef" * 3 + "\n",  # hex digest: not a secret
        "weights.bin": b"\x00\x01" + ("ghp_" + token(ALNUM, 36, "bin")).encode(),  # binary: not scanned
    }
    job_dir = write_job(tmp_path / "toy", files)

    names = set(members(build(job_dir, tmp_path / "cache").path))

    assert set(files) <= names


# -- by name ---------------------------------------------------------------------------------------

SECRET_NAMES = [
    ".npmrc", "kubeconfig", "dev.kubeconfig", ".pgpass", ".htpasswd", ".dockercfg", ".envrc", "prod.env",
    ".env.production", "secrets.yaml", "config/secrets.json", "secrets.toml", "terraform.tfstate",
    "terraform.tfstate.backup", "infra/prod.tfvars", "deploy.ppk", "release.jks", "app.keystore", "client.p12",
    "client.pfx", "AuthKey_ABC123.p8", "vpn.ovpn", ".netrc", ".git-credentials", "credentials",
    "credentials_prod.json", "Credentials.json", "service-account.json", "service_account_prod.json",
    "client_secret_1234.apps.json", "application_default_credentials.json", ".vault-token", ".s3cfg", ".my.cnf",
    ".bash_history",
]  # fmt: skip
SECRET_FOLDERS = {
    ".kube/config": ".kube/", ".docker/config.json": ".docker/", ".azure/accessTokens.json": ".azure/",
    ".config/gcloud/credentials.db": ".config/gcloud/", ".huggingface/token": ".huggingface/",
    "sub/.ssh/id_ed25519": "sub/.ssh/",
}  # fmt: skip


@pytest.mark.parametrize("rel", SECRET_NAMES + list(SECRET_FOLDERS))
def test_files_named_like_secrets_are_left_out_and_named(tmp_path, rel):
    job_dir = write_job(tmp_path / "toy", {rel: MARK, "ok.py": "X = 1\n"})

    package = build(job_dir, tmp_path / "cache")

    assert MARK.encode() not in all_member_bytes(package.path)
    assert package.secrets == [SECRET_FOLDERS.get(rel, rel)]
    assert "ok.py" in members(package.path)


def test_placeholders_of_secret_files_are_packaged(tmp_path):
    files = {
        ".env.example": "KEY=changeme\n",
        "secrets.example.yaml": "key: changeme\n",
        "credentials.sample.json": "{}",
    }
    job_dir = write_job(tmp_path / "toy", files)

    package = build(job_dir, tmp_path / "cache")

    assert set(files) <= set(members(package.path)) and package.secrets == []


# -- letting one through on purpose ----------------------------------------------------------------


def test_a_dlignore_negation_lets_a_secret_through_by_name_and_by_content(tmp_path):
    key_id, secret = aws_pair("neg")
    job_dir = write_job(
        tmp_path / "toy",
        {
            ".dlignore": "!settings_local.py\n!.npmrc\n!.kube/\n",
            "settings_local.py": f"K = '{key_id}'\nS = '{secret}'\n",
            ".npmrc": "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n",
            ".kube/config": "apiVersion: v1\n",
            ".pgpass": MARK,  # not negated: still left out
        },
    )

    package = build(job_dir, tmp_path / "cache")

    assert {"settings_local.py", ".npmrc", ".kube/config"} <= set(members(package.path))
    assert package.secrets == [".pgpass"]


def test_allow_names_the_secrets_to_send_and_must_name_a_file_of_the_job(tmp_path, monkeypatch):
    key_id, secret = aws_pair("allow")
    job_dir = write_job(tmp_path / "toy", {"conf/aws.py": f"K = '{key_id}'\nS = '{secret}'\n", ".npmrc": MARK})
    job = load_job(job_dir)

    package = build_package(job, tmp_path / "cache", 100, allow=["conf/aws.py", str(job_dir / ".npmrc")])
    assert {"conf/aws.py", ".npmrc"} <= set(members(package.path)) and package.secrets == []

    with pytest.raises(PackageError, match=r"conf/aws\.py:1"):
        build_package(job, tmp_path / "cache", 100, allow=[".npmrc"])  # one let through is not all
    monkeypatch.chdir(tmp_path)  # a path from the current folder names the same file
    package = build_package(job, tmp_path / "cache", 100, allow=["toy/conf/aws.py", "toy/.npmrc"])
    assert {"conf/aws.py", ".npmrc"} <= set(members(package.path))
    with pytest.raises(UsageError, match=r"--allow-secret conf/typo\.py: there is no such file") as info:
        build_package(job, tmp_path / "cache", 100, allow=["conf/typo.py"])
    assert_one_line(info.value)


@pytest.mark.train
def test_a_schedule_keeps_its_allowed_secrets_for_update_and_refuses_new_ones(dl_home, tmp_path):
    key_id, secret = aws_pair("sched")
    job = write_job(tmp_path / "toy", {"conf/aws.py": f"K = '{key_id}'\nS = '{secret}'\n"})
    with pytest.raises(PackageError, match=r"conf/aws\.py:1"):
        scheduling.create("nightly", str(job), expression="0 3 * * *", target="local")
    scheduling.create("nightly", str(job), expression="0 3 * * *", target="local", allow_secrets=["conf/aws.py"])

    (job / "model.py").write_text("class M:\n    v = 2\n")
    assert scheduling.update("nightly").changed == ["model.py"]  # conf/aws.py is still let through
    (job / "hub.py").write_text("TOKEN = 'hf_" + token(string.ascii_letters, 34, "s") + "'\n")
    with pytest.raises(PackageError, match=r"hub\.py:1 \(a Hugging Face token\)"):
        scheduling.update("nightly")


# -- symbolic links --------------------------------------------------------------------------------


def test_links_to_secrets_inside_the_job_are_left_out_as_the_secrets_they_point_at(tmp_path):
    job_dir = write_job(
        tmp_path / "toy", {".env": MARK, ".aws/credentials": MARK, ".ssh/id_rsa": MARK, "notes.md": "hello\n"}
    )
    (job_dir / "innocuous.txt").symlink_to(".env")
    (job_dir / "aws_settings.ini").symlink_to(".aws/credentials")
    (job_dir / "sub").mkdir()
    (job_dir / "sub" / "deploy.txt").symlink_to("../.ssh/id_rsa")
    (job_dir / "readme.txt").symlink_to("notes.md")  # an ordinary link: packaged as its file

    package = build(job_dir, tmp_path / "cache")

    assert MARK.encode() not in all_member_bytes(package.path)
    assert {"innocuous.txt", "aws_settings.ini", "sub/deploy.txt"} <= set(package.secrets)
    assert members(package.path)["readme.txt"].isfile()
    assert extract_then_read(package.path, tmp_path / "out", "readme.txt") == b"hello\n"


def test_a_link_is_scanned_for_what_its_target_holds(tmp_path):
    job_dir = write_job(
        tmp_path / "toy", {".dlignore": "!data/blob.txt\n", "data/blob.txt": "t = ghp_" + token(ALNUM, 36, "l")}
    )
    (job_dir / "config.txt").symlink_to("data/blob.txt")

    with pytest.raises(PackageError) as info:
        build(job_dir, tmp_path / "cache")

    assert "config.txt:1 (a GitHub token)" in info.value.message  # the target was let through, the link not
    assert "data/blob.txt" not in info.value.message


def test_links_out_of_the_job_broken_or_looping_are_left_out_as_rsync_safe_links_does(tmp_path):
    outside = tmp_path / "elsewhere.py"
    outside.write_text(MARK)
    job_dir = write_job(tmp_path / "toy")
    (job_dir / "shared.py").symlink_to(outside)
    (job_dir / "gone.py").symlink_to(tmp_path / "missing.py")
    (job_dir / "loop_a").symlink_to("loop_b")
    (job_dir / "loop_b").symlink_to("loop_a")
    (job_dir / "git_config").symlink_to(".git/config")
    (job_dir / ".git").mkdir()
    (job_dir / ".git" / "config").write_text(MARK)

    package = build(job_dir, tmp_path / "cache")

    assert MARK.encode() not in all_member_bytes(package.path)
    assert {"shared.py", "gone.py", "loop_a", "loop_b", "git_config"} <= set(package.excluded)


def extract_then_read(archive: Path, dest: Path, name: str) -> bytes:
    extract_package(archive, dest)
    return (dest / name).read_bytes()


# -- the package cache -----------------------------------------------------------------------------


def _retar_with(archive: Path, name: str, data: bytes) -> bytes:
    """The archive's bytes with one member's content replaced: what a hand-edited cache holds."""
    out = io.BytesIO()
    with tarfile.open(archive, "r:gz") as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src.getmembers():
            content = src.extractfile(member).read()
            if member.name == name:
                content, member.size = data, len(data)
            dst.addfile(member, io.BytesIO(content))
    return out.getvalue()


@pytest.mark.parametrize("damage", ["edited", "truncated", "empty"])
def test_a_damaged_cached_package_is_built_again_and_the_user_told(tmp_path, damage):
    job_dir = write_job(tmp_path / "toy")
    cache = tmp_path / "cache"
    first = build(job_dir, cache)
    good = first.path.read_bytes()
    bad = {
        "edited": _retar_with(first.path, "model.py", b"import os; os.system('curl evil')\n"),
        "truncated": good[: len(good) // 2],
        "empty": b"",
    }[damage]
    first.path.write_bytes(bad)
    assert cached_package(cache, first.sha256) is None

    again = build(job_dir, cache)

    assert again.path.read_bytes() == good and again.sha256 == first.sha256 == hashlib.sha256(good).hexdigest()
    [note] = again.notes
    assert first.sha256[:12] in note and "built again" in note and "\n" not in note
    assert cached_package(cache, first.sha256) is not None
    assert build(job_dir, cache).notes == []


@pytest.mark.train
def test_a_truncated_cache_does_not_block_a_launch_and_is_reported(dl_home, tmp_path):
    job = tmp_path / "mnist"
    shutil.copytree(MNIST, job, ignore=shutil.ignore_patterns("__pycache__"))
    plan = json.loads(invoke("launch", str(job), "--local", "--dry-run", "--no-smoke-test", "--json").stdout)
    cached = Path(plan["package"]["path"])
    cached.write_bytes(cached.read_bytes()[:100])

    result = invoke("launch", str(job), "--local", "--dry-run", "--no-smoke-test")

    assert result.exit_code == 0, result.output
    assert f"The cached package {plan['package']['sha256'][:12]}" in result.stderr
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == plan["package"]["sha256"]


@pytest.mark.train
def test_a_schedule_fires_its_pinned_package_only_when_it_still_hashes_to_its_pin(dl_home, tmp_path, monkeypatch):
    job = write_job(tmp_path / "toy")
    schedule = scheduling.create("nightly", str(job), expression="0 3 * * *", target="local")
    pinned = dl_home / "packages" / f"{schedule.package_hash}.tar.gz"
    good = pinned.read_bytes()
    started = []
    # Stands in for starting a real run: fire() hands over the plan it would start.
    monkeypatch.setattr(api, "start", lambda plan, **kw: started.append(plan.package.path.read_bytes()))
    store = Client()

    pinned.write_bytes(good[:-10])  # the job folder is unchanged: the same bytes are built again
    scheduling.fire(store, schedule, time.time())
    assert started == [good]

    pinned.write_bytes(_retar_with(pinned, "model.py", b"evil = 1\n"))
    (job / "model.py").write_text("class M:\n    changed = True\n")
    with pytest.raises(UsageError, match=r"gone or damaged, and the job folder now packages differently") as info:
        scheduling.fire(store, schedule, time.time())
    assert "dl schedule update nightly" in info.value.hint
    assert len(started) == 1


# -- temporary files of killed builds --------------------------------------------------------------


def test_a_build_killed_while_writing_leaves_a_temp_file_that_the_next_build_removes(tmp_path):
    job_dir = write_job(tmp_path / "toy", {"big.txt": token(ALNUM, 2_000_000, "big")})
    cache = tmp_path / "cache"
    code = (
        "import sys; from pathlib import Path; from orchestrator.jobs import load_job;"
        " from orchestrator.packaging import build_package;"
        " build_package(load_job(Path(sys.argv[1])), Path(sys.argv[2]), 100)"
    )
    env = {**os.environ, "DL_TEST_FAULT": "package-write:kill", "PYTHONPATH": str(REPO)}
    killed = subprocess.Popen([sys.executable, "-c", code, str(job_dir), str(cache)], env=env)
    assert killed.wait(timeout=120) == -9
    [leftover] = list(cache.iterdir())
    assert leftover.name.endswith(f".tar.tmp{killed.pid}")
    assert 0 < leftover.stat().st_size  # half a package: the first half was written

    package = build(job_dir, cache)

    assert sorted(p.name for p in cache.iterdir()) == [package.path.name]
    assert hashlib.sha256(package.path.read_bytes()).hexdigest() == package.sha256


def test_a_live_build_s_temp_file_stays_and_a_dead_or_old_one_goes(tmp_path):
    job_dir = write_job(tmp_path / "toy")
    cache = tmp_path / "cache"
    cache.mkdir()
    live = cache / (("a" * 64) + f".tar.tmp{os.getpid()}")  # this process is alive: a build in progress
    live.write_bytes(b"half")
    stale = cache / (("b" * 64) + f".tar.tmp{os.getpid()}")
    stale.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))  # a pid reused since: its age gives it away
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=60)
    dead = cache / (("c" * 64) + f".tar.tmp{ended.pid}")  # a fresh file whose build is gone
    dead.write_bytes(b"half")
    unrelated = cache / "notes.tmp1"
    unrelated.write_text("not ours")

    package = build(job_dir, cache)

    assert sorted(p.name for p in cache.iterdir()) == sorted([package.path.name, live.name, unrelated.name])


# -- DL_MAX_PACKAGE_MB -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "-5", "0", "lots"])
def test_a_max_package_size_that_is_not_a_size_is_refused_in_one_line(dl_home, monkeypatch, value):
    monkeypatch.setenv("DL_MAX_PACKAGE_MB", value)

    result = invoke("launch", str(MNIST), "--local", "--dry-run", "--no-smoke-test")

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and f"DL_MAX_PACKAGE_MB={value!r}" in result.stderr
    assert not (dl_home / "packages").exists()


def test_every_kind_the_scanner_knows_has_a_case_above():
    assert {case[2] for case in CASES} == set(KIND_NAMES)
