"""Credentials that must never enter a package: found by file name, and by what a file holds.

By name (:func:`secret_name`, :func:`secret_dir`): the files and folders that credential tools
and secret scanners treat as sensitive wherever they appear (gitrob's and GitHub's lists of
sensitive files, gitleaks' PKCS#12 rule): SSH and TLS keys, keystores, cloud CLI folders,
``.env`` files, package-registry tokens (``.npmrc``, ``.pypirc``), ``.netrc``, ``kubeconfig``,
``.pgpass``, ``.htpasswd``, Terraform state and variables, shell histories. A name with an
``.example``/``.sample``/``.template`` part (``.env.example``) is a placeholder, not a secret.

By content (:func:`scan`): one compiled search per kind over a file's bytes (see _RULES), for
private-key blocks and the token formats gitleaks and trufflehog recognise by their fixed prefix or
shape (AWS, GitHub, GitLab, Slack, npm, PyPI, Stripe, OpenAI, Anthropic, Hugging Face, Google API
keys and service-account files). Only text is scanned: a file with a NUL byte in its first 8000
bytes is binary (git's own test), and files over :data:`SCAN_LIMIT` bytes are not read twice.
A finding names the kind and the line, never the matched text.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

SCAN_LIMIT = 16 * 1024 * 1024  # bytes; larger files are data, and cost more to scan than they risk
BINARY_SNIFF = 8000  # bytes, as git's buffer_is_binary()

SECRET_DIRS = {".aws", ".ssh", ".gnupg", ".docker", ".kube", ".azure", ".gcloud", ".password-store", ".terraform.d"}
_SECRET_DIR_PATHS = (".config/gcloud", ".config/gh", ".huggingface", ".cache/huggingface")
_SECRET_FILES = (
    # environment files
    ".env", ".env.*", "*.env", ".envrc",
    # private keys, certificates with keys, keystores, password databases
    "*.pem", "*.key", "*.p8", "*.p12", "*.pfx", "*.pkcs12", "*.ppk", "*.jks", "*.keystore", "*.bks",
    "*.kdbx", "*.keychain", "*.keychain-db", "*.ovpn", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    # tokens and passwords of tools
    ".netrc", "_netrc", ".git-credentials", ".npmrc", ".pypirc", ".pgpass", ".my.cnf", ".htpasswd",
    ".dockercfg", ".vault-token", ".s3cfg", ".boto", "kubeconfig*", "*.kubeconfig",
    # credential and secret files by their usual names
    "credentials*", "secrets", "secrets.*", "*.secrets", "client_secret*.json", "service-account*.json",
    "service_account*.json", "application_default_credentials.json",
    # Terraform state holds every resource's secrets in clear; tfvars their inputs
    "terraform.tfstate*", "*.tfstate", "*.tfstate.backup", "*.tfvars", "*.tfvars.json",
    # shell and database histories
    ".bash_history", ".zsh_history", ".sh_history", ".python_history", ".psql_history", ".mysql_history",
)  # fmt: skip
_NAMES = re.compile("|".join(fnmatch.translate(pattern) for pattern in _SECRET_FILES))
_PLACEHOLDER = re.compile(r"\.(example|sample|template|dist)(\.|$)")


def secret_name(name: str) -> bool:
    """Whether a file called ``name`` is a likely secret whatever it holds."""
    name = name.lower()
    return not _PLACEHOLDER.search(name) and _NAMES.match(name) is not None


def secret_dir(rel: str) -> bool:
    """Whether the folder at ``rel`` (a job-relative posix path) holds credentials by its name."""
    rel = rel.lower()
    return rel.rsplit("/", 1)[-1] in SECRET_DIRS or any(
        rel == path or rel.endswith("/" + path) for path in _SECRET_DIR_PATHS
    )


def secret_path(rel: str) -> bool:
    """Whether the job-relative file path ``rel`` is a secret by its name or by a folder on the way."""
    parts = rel.split("/")
    return secret_name(parts[-1]) or any(secret_dir("/".join(parts[: i + 1])) for i in range(len(parts) - 1))


# -- by content ------------------------------------------------------------------------------------

# 40 base64 characters, not part of a longer run; AWS's documentation example (…EXAMPLEKEY) is no secret
_AWS_SECRET = rb"(?![A-Za-z0-9/+]{30}EXAMPLEKEY)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
# kind: (what it is called, gate, pattern). Python's re has no multi-pattern search: one alternation
# of all these runs at ~5 MB/s. A pattern that starts with a literal is searched for that literal
# first, in C, at about 1 GB/s, so each kind is its own search. The two without a literal start
# (the case-insensitive AWS name, the OpenAI key whose marker sits inside it) have a gate: literals
# found with bytes.find first, the pattern runs only on a file that holds one.
_RULES: dict[str, tuple[str, tuple[bytes, ...], bytes]] = {
    # A key block, not a mention of one: the header is followed by key material (PEM base64 or an
    # encrypted PEM's Proc-Type header), also where JSON escapes the newlines as \n.
    "private_key": (
        "a private key",
        (),
        rb"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----(?:\s|\\n)*(?:[A-Za-z0-9+/=]{40}|Proc-Type:)",
    ),
    "putty_key": ("a PuTTY private key", (), rb"PuTTY-User-Key-File-\d: "),
    # "type": "service_account" and a private key in the same file: a GCP service-account key
    "gcp_service_account": (
        "a GCP service-account key",
        (),
        rb'"type"\s*:\s*"service_account"[\s\S]{0,4000}?"private_key"\s*:\s*"-----BEGIN',
    ),
    # An access key id (not the documentation's AKIA...EXAMPLE) with a 40-character mixed-case secret
    # after it, within 300 characters
    "aws_key_pair": (
        "an AWS access key id with its secret",
        (),
        rb"A(?:KIA|SIA)(?![A-Z2-7]{9}EXAMPLE)[A-Z2-7]{16}\b[\s\S]{0,300}?(?<![A-Za-z0-9/+=])"
        rb"(?=[A-Za-z0-9/+]{0,39}[a-z])(?=[A-Za-z0-9/+]{0,39}[A-Z])" + _AWS_SECRET,
    ),
    "aws_secret": (
        "an AWS secret access key",
        (b"aws_secret", b"AWS_SECRET", b"awsSecret", b"AwsSecret"),
        rb"(?i:aws_?secret_?(?:access_?)?key)[\"']?\s*[:=]\s*[\"']?" + _AWS_SECRET,
    ),
    "github": ("a GitHub token", (), rb"gh[pousr]_[A-Za-z0-9]{36}\b"),
    "github_pat": ("a GitHub token", (), rb"github_pat_[A-Za-z0-9_]{82}\b"),
    "gitlab": ("a GitLab token", (), rb"glpat-[A-Za-z0-9_-]{20}\b"),
    "slack": ("a Slack token", (), rb"xox[abposre]-[0-9]+-[0-9A-Za-z-]{10,}"),
    "slack_webhook": (
        "a Slack webhook URL",
        (),
        rb"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}",
    ),
    "npm": ("an npm token", (), rb"npm_[A-Za-z0-9]{36}\b"),
    "pypi": ("a PyPI token", (), rb"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"),
    "stripe": ("a Stripe live key", (), rb"k_live_[A-Za-z0-9]{24,}"),  # sk_live_, rk_live_
    "openai": (
        "an OpenAI API key",
        (b"T3BlbkFJ",),
        rb"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}",
    ),
    "anthropic": ("an Anthropic API key", (), rb"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,}"),
    "huggingface": ("a Hugging Face token", (), rb"hf_[A-Za-z]{34}\b"),
    "google_api_key": ("a Google API key", (), rb"AIza[0-9A-Za-z_-]{35}\b"),
}
KIND_NAMES = {kind: rule[0] for kind, rule in _RULES.items()}
_COMPILED = [(kind, gate, re.compile(pattern)) for kind, (_, gate, pattern) in _RULES.items()]


@dataclass(frozen=True)
class Finding:
    """A credential found in a file: where (``path``, 1-based ``line``) and what (``kind``), never the text."""

    path: str
    kind: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({KIND_NAMES[self.kind]})"


def is_text(data: bytes) -> bool:
    return b"\0" not in data[:BINARY_SNIFF]


def scan(data: bytes, path: str) -> Finding | None:
    """The first credential in ``data`` (a file's bytes), or None; binary and oversized files are
    not scanned."""
    if len(data) > SCAN_LIMIT or not is_text(data):
        return None
    first: tuple[int, str] | None = None
    for kind, gate, pattern in _COMPILED:
        if gate and not any(literal in data for literal in gate):
            continue
        match = pattern.search(data)
        if match and (first is None or match.start() < first[0]):
            first = (match.start(), kind)
    if first is None:
        return None
    return Finding(path, first[1], data.count(b"\n", 0, first[0]) + 1)
