"""Project settings: region, bucket, role, default target, GPU, spot, limits, tags.

Settings come from a ``dl.toml`` found by walking up from the current folder (the first one
wins; ``DL_CONFIG=/path/to/file`` names one instead), from environment variables, and from
command-line flags. Each value comes from the first of these that gives it::

    CLI flag  >  DL_* variable  >  dl.toml  >  built-in default

Two settings also read the standard AWS variables, ranked by whose decision they express:

* ``region``: ``--region`` > ``DL_REGION`` > dl.toml ``[aws].region`` > ``AWS_REGION`` >
  ``AWS_DEFAULT_REGION`` > the profile's own region (left to boto3). The bucket and roles live
  in one region, so a project file that pins it beats a region left over in the shell.
* ``profile``: ``--profile`` > ``DL_PROFILE`` > ``AWS_PROFILE`` > dl.toml ``[aws].profile``.
  Credentials belong to the person, not the project: exporting AWS_PROFILE is a deliberate act,
  and a profile named in a shared file may not exist on every machine. For the same reason a
  profile named only in dl.toml is not used when the environment already carries credentials
  (``AWS_ACCESS_KEY_ID``, a web-identity token, container credentials), as in CI.

``gpu`` and ``instance_type`` are alternatives: when both are set, the one from the higher level
wins (``--instance-type`` beats dl.toml's ``gpu``); both at the same level is an error. In
dl.toml, ``gpu = ""`` means CPU. A dl.toml in the home folder serves as a per-user default for
folders below it that have none of their own (the nearest file wins; files are not merged).

``endpoint_url`` is read from ``AWS_ENDPOINT_URL`` only (boto3 reads it itself; it is here so
``dl config`` can show it). An environment variable set to the empty string counts as unset.
Every value is checked: a bad one is a :class:`UsageError` naming where it came from.

:func:`write_settings` edits dl.toml in place (``dl config set``, ``dl infra deploy``), changing
only the keys it is given and keeping every other line and comment (through tomlkit, imported only
then). Otherwise stdlib only: this module is imported on the CLI's hot path.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.backends import TARGETS
from orchestrator.errors import UsageError
from orchestrator.fsutil import atomic_write
from orchestrator.settings import parse_bool

FILE_NAME = "dl.toml"
SECTIONS = ("aws", "defaults", "tags")
DEFAULT = "default"
# Variables that carry credentials themselves; their presence outranks a profile named in dl.toml.
CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings. ``sources[name]`` says where each value came from."""

    region: str | None = None
    profile: str | None = None
    bucket: str | None = None
    prefix: str = "dl"
    role_arn: str | None = None
    scheduler_role_arn: str | None = None
    stack_name: str = "dl"
    target: str = "local"
    gpu: str | None = None
    instance_type: str | None = None
    spot: bool = False
    max_hours: float = 24.0
    volume_gb: int = 50
    framework_version: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    endpoint_url: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None

    def session_kwargs(self) -> dict[str, str]:
        """Arguments for ``boto3.session.Session``. A profile that came from AWS_PROFILE is left for
        boto3 to read itself, so its own rules (keys in the environment win) still apply."""
        out = {"region_name": self.region} if self.region else {}
        if self.profile and self.sources.get("profile") != "AWS_PROFILE":
            out["profile_name"] = self.profile
        return out

    def to_json(self) -> dict:
        data = asdict(self)
        data["config_path"] = str(self.config_path) if self.config_path else None
        return data


class _Bad(ValueError):
    """A value that fails a check: ``reason`` completes "<where> ...", ``hint`` says what to do."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def _text(value: str) -> str:
    if not value.strip():
        raise _Bad("is empty.")
    return value.strip()


def _optional(value: str) -> str | None:
    return value.strip() or None


def _pattern(regex: str, what: str, hint: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not re.fullmatch(regex, value.strip()):
            raise _Bad(f"is not {what}.", hint)
        return value.strip()

    return check


def _bucket(value: str) -> str:
    if value.startswith("s3://"):
        raise _Bad("is a URI, not a bucket name.", f"Use the name alone: {value[5:].split('/')[0]!r}.")
    return _pattern(
        r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
        "a valid S3 bucket name",
        "Use 3-63 lowercase letters, digits, dots and hyphens.",
    )(value)


def _prefix(value: str) -> str:
    return value.strip().strip("/")


def _target(value: str) -> str:
    if value.strip() not in TARGETS:
        raise _Bad("is not a target.", f"{_did_you_mean(value.strip(), TARGETS)}Targets: {', '.join(TARGETS)}.")
    return value.strip()


def _instance_type(value: str) -> str | None:
    value = value.strip()
    if value and not re.fullmatch(r"ml\.[a-z0-9-]+\.[a-z0-9-]+", value):
        example = f"ml.{value}" if re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", value) else "ml.g5.xlarge"
        raise _Bad("is not a SageMaker instance type.", f"SageMaker types start with 'ml.', e.g. {example!r}.")
    return value or None


def _max_hours(value: float) -> float:
    if not 0 < value <= 672:
        raise _Bad("must be more than 0 and at most 672 hours.", "SageMaker stops a job after 28 days at most.")
    return float(value)


def _volume_gb(value: int) -> int:
    if value < 1:
        raise _Bad("must be at least 1 GB.")
    return value


_REGION = _pattern(r"[a-z]{2,}(-[a-z]+)+-\d+", "an AWS region", "Use a region code such as eu-west-1.")
_ROLE = _pattern(
    r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+",
    "an IAM role ARN",
    "Expected arn:aws:iam::ACCOUNT:role/NAME; `dl infra deploy` writes it.",
)
_STACK = _pattern(r"[A-Za-z][A-Za-z0-9-]{0,127}", "a CloudFormation stack name", "Use letters, digits and hyphens.")
_VERSION = _pattern(r"\d+\.\d+(\.\d+)?", "a version such as 2.8.0", 'Write it as a quoted string: "2.8.0".')


@dataclass(frozen=True)
class _Field:
    section: str  # its table in dl.toml
    kind: type  # what TOML must give; strings from the environment are parsed into it
    check: Callable  # value → normalized value, or raises _Bad


FIELDS: dict[str, _Field] = {
    "region": _Field("aws", str, _REGION),
    "profile": _Field("aws", str, _text),
    "bucket": _Field("aws", str, _bucket),
    "prefix": _Field("aws", str, _prefix),
    "role_arn": _Field("aws", str, _ROLE),
    "scheduler_role_arn": _Field("aws", str, _ROLE),
    "stack_name": _Field("aws", str, _STACK),
    "target": _Field("defaults", str, _target),
    "gpu": _Field("defaults", str, _optional),
    "instance_type": _Field("defaults", str, _instance_type),
    "spot": _Field("defaults", bool, bool),
    "max_hours": _Field("defaults", float, _max_hours),
    "volume_gb": _Field("defaults", int, _volume_gb),
    "framework_version": _Field("defaults", str, _VERSION),
}
_DEFAULTS = Settings()


def env_var(name: str) -> str:
    """The DL_* variable of a setting: ``max_hours`` → ``DL_MAX_HOURS``."""
    return "DL_" + name.upper()


def _from_text(name: str, raw: str):
    """Parse a string (environment, CLI, `dl config set`) into the setting's type, then check it."""
    kind = FIELDS[name].kind
    if kind is bool:
        value = parse_bool(raw.strip())
        if value is None:
            raise _Bad("is not true or false.", "Use true/false, 1/0 or yes/no.")
        return value
    if kind in (int, float):
        try:
            number = kind(raw.strip())
        except ValueError:
            raise _Bad("is not a whole number." if kind is int else "is not a number.") from None
        return FIELDS[name].check(number)
    return FIELDS[name].check(raw)


def _from_value(name: str, value: object):
    """Check a typed value (dl.toml, Python callers); strings are not numbers here."""
    kind = FIELDS[name].kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        wanted = {str: "a string", bool: "true or false", int: "a whole number", float: "a number"}[kind]
        raise _Bad(f"is not {wanted}.", f'Quote it: {name} = "{value}".' if kind is str else "")
    return FIELDS[name].check(value)


def _fail(where: str, raw: object, bad: _Bad) -> UsageError:
    return UsageError(f"{where}={raw!r} {bad.reason}" if where.isupper() else f"{where} {raw!r} {bad.reason}", bad.hint)


def _did_you_mean(word: str, choices, prefix: str = "") -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"Did you mean '{prefix}{close[0]}'? " if close else ""


# -- the file ------------------------------------------------------------------------------


def find_config(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The dl.toml in effect: ``DL_CONFIG`` (must exist), else the nearest one from ``cwd`` up."""
    environ = os.environ if environ is None else environ
    start = Path(cwd or Path.cwd()).absolute()
    explicit = environ.get("DL_CONFIG", "")
    if explicit:
        path = (start / Path(explicit).expanduser()).absolute()
        if not path.is_file():
            raise UsageError(f"DL_CONFIG={explicit!r}: no such file.", "Point it at a dl.toml, or unset it.")
        return path
    for folder in (start, *start.parents):
        if (folder / FILE_NAME).is_file():
            return folder / FILE_NAME
    return None


def _parse(path: Path, text: str | None = None) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8") if text is None else text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}.", "Fix that line (see `dl config`).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}.") from None


def _check_document(path: Path, doc: dict) -> dict[str, object]:
    """A parsed dl.toml → ``{field: value}`` plus ``tags``; unknown or ill-typed keys are errors."""
    where_known = {name: f.section for name, f in FIELDS.items()}
    out: dict[str, object] = {}
    for section, table in doc.items():
        if section not in SECTIONS:
            hint = (
                f"Did you mean [{where_known[section]}] {section}? "
                if section in where_known
                else _did_you_mean(section, SECTIONS)
            )
            raise UsageError(f"Unknown key {section!r} in {path}.", f"{hint}Known tables: [aws], [defaults], [tags].")
        if not isinstance(table, dict):
            raise UsageError(f"{section!r} in {path} must be a table.", f"Write it as a [{section}] header.")
        if section == "tags":
            out["tags"] = _check_tags(table, f"in [tags] of {path}")
            continue
        known = [n for n, f in FIELDS.items() if f.section == section]
        for key, value in table.items():
            if key not in known:
                other = (
                    f"Did you mean [{where_known[key]}] {key}? " if key in where_known else _did_you_mean(key, known)
                )
                raise UsageError(
                    f"Unknown key {key!r} under [{section}] in {path}.", f"{other}Known keys: {', '.join(known)}."
                )
            try:
                out[key] = _from_value(key, value)
            except _Bad as bad:
                raise UsageError(f"{key} = {value!r} under [{section}] in {path} {bad.reason}", bad.hint) from None
    return out


def _check_tags(tags: Mapping, where: str) -> dict[str, str]:
    for key, value in tags.items():
        if not isinstance(value, str):
            raise UsageError(f"Tag {key!r} {where} must be a string, not {value!r}.", f'Quote it: {key} = "{value}".')
        if key.lower().startswith("aws:") or not 1 <= len(key) <= 128 or len(value) > 256:
            raise UsageError(
                f"Tag {key!r} {where} is not allowed.",
                "Keys: 1-128 characters, not starting with 'aws:'; values at most 256.",
            )
    return dict(tags)


# -- resolution ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigFile:
    """The dl.toml in effect (``path`` None when there is none) and its checked values."""

    path: Path | None
    values: Mapping[str, object]


def read_config(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> ConfigFile:
    """Find and check the dl.toml in effect: the one walk up the folders a command needs."""
    path = find_config(cwd, os.environ if environ is None else environ)
    return ConfigFile(path, _check_document(path, _parse(path)) if path else {})


def load_settings(
    cli: Mapping[str, object] | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    file: ConfigFile | None = None,
) -> Settings:
    """Resolve every setting: default < dl.toml < environment < ``cli`` (field name → value; None
    means "not given"; keys that are not settings, such as ``nodes``, are ignored so a command
    can pass all its options). See the module docstring for the AWS variables' ranks.
    ``file``: a dl.toml already read (read_config), so resolving again reads no file."""
    environ = os.environ if environ is None else environ
    cli = {k: v for k, v in (cli or {}).items() if v is not None and (k in FIELDS or k == "tags")}
    file = file or read_config(cwd, environ)
    path, from_file = file.path, file.values
    file_label = f"{FILE_NAME} ({path})"
    env = {k: v for k, v in environ.items() if v != ""}
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name in FIELDS:
        values[name], sources[name] = getattr(_DEFAULTS, name), DEFAULT
        for label, raw, parse in _candidates(name, cli, env, from_file, file_label)[:1]:
            try:
                values[name], sources[name] = parse(name, raw), label
            except _Bad as bad:
                raise _fail(label, raw, bad) from None
    if sources["profile"] == file_label:
        carrying = [v for v in CREDENTIAL_VARS if env.get(v)]
        if carrying:
            values["profile"] = None
            sources["profile"] = f"{DEFAULT} ({FILE_NAME}'s profile not used: {carrying[0]} is set)"
    _one_machine_choice(values, sources)
    tags = dict(from_file.get("tags", {}))
    sources["tags"] = file_label if "tags" in from_file else DEFAULT
    if cli.get("tags"):
        tags.update(_check_tags(cli["tags"], "given with --tag"))
        sources["tags"] = "--tag" if sources["tags"] == DEFAULT else f"{file_label} + --tag"
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint and not re.match(r"https?://", endpoint):
        raise UsageError(f"AWS_ENDPOINT_URL={endpoint!r} is not an http(s) URL.", "Example: http://127.0.0.1:5000")
    sources["endpoint_url"] = "AWS_ENDPOINT_URL" if endpoint else DEFAULT
    return Settings(**values, tags=tags, endpoint_url=endpoint, sources=sources, config_path=path)


def _candidates(name: str, cli: Mapping, env: Mapping, from_file: Mapping, file_label: str) -> list[tuple]:
    """Where setting ``name`` is given, highest precedence first: (label, raw value, parser)."""
    found: list[tuple] = []
    if name in cli:
        value = cli[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool) and not value:
            flag = "--on-demand" if name == "spot" else f"--no-{flag[2:]}"
        found.append((flag, value, _from_text if isinstance(value, str) else _from_value))
    found.append((env_var(name), env.get(env_var(name)), _from_text))
    if name == "profile":
        found.append(("AWS_PROFILE", env.get("AWS_PROFILE"), _from_text))
    if name in from_file:  # already checked with the whole file; None is a meaningful "" (gpu = "")
        found.append((file_label, from_file[name], lambda _name, value: value))
    if name == "region":
        found += [(var, env.get(var), _from_text) for var in ("AWS_REGION", "AWS_DEFAULT_REGION")]
    return [item for item in found if item[1] is not None or item[0] == file_label]


def credentials_source(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """Where boto3 will look for credentials, in words; names variables, never their values."""
    environ = os.environ if environ is None else environ
    if settings.profile and settings.sources.get("profile") != "AWS_PROFILE":
        return f"profile {settings.profile!r} (from {settings.sources['profile']})"
    carrying = [var for var in CREDENTIAL_VARS if environ.get(var)]
    if carrying:
        return f"the environment ({carrying[0]})"
    if settings.profile:
        return f"profile {settings.profile!r} (from AWS_PROFILE)"
    return "boto3's default chain (the default profile in ~/.aws, SSO, or an instance role)"


def _rank(source: str) -> int:
    return 3 if source.startswith("--") else 2 if source.startswith("DL_") else 1 if source != DEFAULT else 0


def _one_machine_choice(values: dict, sources: dict) -> None:
    """gpu and instance_type are alternatives: the one set at the higher level wins."""
    if values["gpu"] is None or values["instance_type"] is None:
        return
    gpu_rank, type_rank = _rank(sources["gpu"]), _rank(sources["instance_type"])
    if gpu_rank == type_rank:
        raise UsageError(
            f"Both gpu ({sources['gpu']}) and instance_type ({sources['instance_type']}) are set.",
            "They are alternatives: keep one.",
        )
    loser, winner = ("gpu", "instance_type") if gpu_rank < type_rank else ("instance_type", "gpu")
    values[loser], sources[loser] = None, f"{DEFAULT} (overridden by {sources[winner]})"


_NAMES = {
    "region": "AWS region",
    "bucket": "S3 bucket",
    "role_arn": "execution role",
    "scheduler_role_arn": "scheduler role",
}


def require(settings: Settings, *fields: str, purpose: str) -> None:
    """Raise one UsageError naming every missing field among ``fields`` and how to set each:
    "No S3 bucket configured for the sagemaker target. Run `dl infra deploy`, set DL_BUCKET, or
    add `bucket = ...` under [aws] in dl.toml." Returns quietly when nothing is missing."""
    missing = [name for name in fields if getattr(settings, name) in (None, "")]
    if not missing:
        return
    names = [_NAMES.get(n, n.replace("_", " ")) for n in missing]
    listed = " or ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " or " + names[-1]
    envs = " and ".join(env_var(n) for n in missing)
    keys = " and ".join(
        ", ".join(f"`{n} = ...`" for n in missing if FIELDS[n].section == section) + f" under [{section}]"
        for section in ("aws", "defaults")
        if any(FIELDS[n].section == section for n in missing)
    )
    deploy = set(missing) & {"bucket", "role_arn", "scheduler_role_arn", "stack_name"}
    start = "Run `dl infra deploy`, set" if deploy else "Set"
    raise UsageError(f"No {listed} configured for {purpose}.", f"{start} {envs}, or add {keys} in {FILE_NAME}.")


# -- writing -------------------------------------------------------------------------------


def split_key(dotted: str) -> tuple[str, str]:
    """``"aws.bucket"`` → ``("aws", "bucket")``; an unknown section or key is a UsageError."""
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key:
        hint = f"Did you mean '{FIELDS[section].section}.{section}'? " if section in FIELDS else ""
        hint = hint or _did_you_mean(section, SECTIONS)
        raise UsageError(f"{dotted!r} is not SECTION.KEY.", f"{hint}Sections: aws, defaults, tags; e.g. aws.bucket.")
    known = [n for n, f in FIELDS.items() if f.section == section]
    if section != "tags" and key not in known:
        hint = (
            f"Did you mean '{FIELDS[key].section}.{key}'? "
            if key in FIELDS
            else _did_you_mean(key, known, f"{section}.")
        )
        raise UsageError(f"Unknown key {dotted!r}.", f"{hint}Known keys under [{section}]: {', '.join(known)}.")
    return section, key


def coerce(dotted: str, raw: str) -> tuple[str, str, object]:
    """``"defaults.spot", "true"`` → ``("defaults", "spot", True)``, checked against the schema.
    Strings are kept as given (``gpu = ""`` stays an explicit CPU); numbers and bools are parsed."""
    section, key = split_key(dotted)
    if section == "tags":
        return section, key, _check_tags({key: raw}, "given")[key]
    try:
        value = _from_text(key, raw)
    except _Bad as bad:
        raise UsageError(f"{dotted} {raw!r} {bad.reason}", bad.hint) from None
    return section, key, raw.strip() if FIELDS[key].kind is str else value


def write_settings(
    updates: Mapping[str, Mapping[str, object]],
    path: Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Set ``{section: {key: value}}`` in dl.toml (None removes a key) and return the file's path.

    The file is the one ``path`` names, else the one in effect (DL_CONFIG or the nearest), else a
    new ``dl.toml`` in ``cwd``. Only the given keys change; every other line and comment stays.
    The result is parsed and checked before it replaces the file (atomically), so a write never
    leaves an invalid or half-written dl.toml behind."""
    environ = os.environ if environ is None else environ
    if path is None:
        explicit = environ.get("DL_CONFIG", "")
        base = Path(cwd or Path.cwd()).absolute()
        path = (base / Path(explicit).expanduser()).absolute() if explicit else find_config(cwd, environ)
        path = path or base / FILE_NAME
    path = Path(path).absolute()
    exists = path.is_file()
    if not exists and all(v is None for table in updates.values() for v in table.values()):
        return path  # nothing to remove from a file that does not exist
    text = path.read_bytes().decode("utf-8") if exists else ""
    before = _parse(path, text) if exists else {}
    new_text = _edited(path, text, updates)
    expected = {section: dict(table) for section, table in before.items() if isinstance(table, dict)}
    for section, table in updates.items():
        for key, value in table.items():
            if value is None:
                expected.get(section, {}).pop(key, None)
            else:
                expected.setdefault(section, {})[key] = value
    try:
        after = _parse(path, new_text)
    except UsageError:
        after = None
    if after is None or {s: t for s, t in after.items() if t} != {s: t for s, t in expected.items() if t}:
        raise UsageError(
            f"Cannot update {path} safely: it sets these keys in a form dl does not edit.", "Edit it by hand."
        )
    _check_document(path, after)  # the whole file, so a write never leaves a dl.toml that fails to load
    atomic_write(path, new_text)
    return path


def _edited(path: Path, text: str, updates: Mapping[str, Mapping[str, object]]) -> str:
    """``text`` with the updates applied through tomlkit, which keeps every other line, comment and
    the file's line endings. A section set with dotted keys (``aws.bucket = ...``) is refused."""
    import tomlkit  # ~15 ms: only when a file is written
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text) if text else tomlkit.document()
    except TOMLKitError as exc:
        raise UsageError(f"{path} is not valid TOML ({exc}).", "Fix it by hand, then run the command again.") from None
    if not text:
        doc.add(tomlkit.comment("dl project settings: see `dl config`."))
    for section, table in updates.items():
        for key, value in table.items():
            split_key(f"{section}.{key}")
            if value is not None:
                _check_document(path, {section: {key: value}})  # the value on its own: type, range
            current = doc.get(section)
            if current is None:
                if value is None:
                    continue
                doc[section] = current = tomlkit.table()
            if not isinstance(current, dict) or getattr(current, "is_super_table", lambda: False)():
                raise UsageError(
                    f"Cannot update {path} safely: it sets these keys in a form dl does not edit.", "Edit it by hand."
                )
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
    out = doc.as_string()
    if "\r\n" in text:  # tomlkit writes new lines with \n: keep a CRLF file CRLF throughout
        out = re.sub(r"(?<!\r)\n", "\r\n", out)
    return out


def toml_value(value: object) -> str:
    """``value`` as TOML writes it (``true``, ``8``, ``"text"``), for messages."""
    import tomlkit

    return tomlkit.item(value).as_string()
