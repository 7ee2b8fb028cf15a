"""Project settings: dl.toml discovery, precedence with sources, checks, the writer, `dl config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.config import FIELDS, load_settings, require, write_settings
from orchestrator.errors import UsageError

ROLE = "arn:aws:iam::123456789012:role/dl-sagemaker-execution"
SCHEDULER = "arn:aws:iam::123456789012:role/dl-scheduler"
EXAMPLE = f"""\
# Project settings for dl
[aws]
region = "eu-west-1"   # Ireland: the bucket lives here
profile = "ml"
bucket = "acme-dl"
role_arn = "{ROLE}"

[defaults]
target = "sagemaker"   # local | sagemaker
gpu = "A10G"
spot = true
max_hours = 4.0

# extra tags on every training job
[tags]
team = "vision"
"""
_VARS = [f"DL_{name.upper()}" for name in FIELDS] + [
    "DL_CONFIG",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project folder as the current folder, with no dl or AWS variables set."""
    for var in _VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DL_HOME", str(tmp_path / "dl-home"))
    root = tmp_path / "proj"
    root.mkdir()
    stray = [p / "dl.toml" for p in root.parents if (p / "dl.toml").is_file()]
    assert not stray, f"a dl.toml above the test folder would leak into these tests: {stray}"
    monkeypatch.chdir(root)
    return root


def write(path: Path, text: str = EXAMPLE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        fn(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text, f"errors are one line: {text!r}"
    return text


def invoke(*args: str):
    from orchestrator.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


# -- discovery -----------------------------------------------------------------------------


def test_no_file_means_defaults_everywhere(project):
    settings = load_settings()
    assert settings.config_path is None
    assert (settings.target, settings.prefix, settings.spot, settings.max_hours) == ("local", "dl", False, 24.0)
    assert (settings.bucket, settings.region, settings.gpu, settings.tags) == (None, None, None, {})
    assert set(settings.sources.values()) == {"default"}


def test_found_by_walking_up_and_the_nearest_wins(project):
    top = write(project / "dl.toml")
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    settings = load_settings(cwd=deep)
    assert settings.config_path == top
    assert (settings.region, settings.bucket, settings.gpu, settings.spot) == ("eu-west-1", "acme-dl", "A10G", True)
    assert settings.tags == {"team": "vision"}
    assert settings.sources["bucket"] == f"dl.toml ({top})"
    assert settings.sources["prefix"] == "default"

    nearer = write(project / "src" / "dl.toml", '[aws]\nbucket = "nearer"\n')
    settings = load_settings(cwd=deep)
    assert settings.config_path == nearer
    assert settings.bucket == "nearer" and settings.region is None, "only the nearest file counts, no merging"


def test_dl_config_names_the_file_and_must_exist(project, monkeypatch):
    write(project / "dl.toml")
    other = write(project / "elsewhere" / "team.toml", '[aws]\nbucket = "team-bucket"\n')
    monkeypatch.setenv("DL_CONFIG", "elsewhere/team.toml")  # relative to the current folder
    settings = load_settings()
    assert settings.config_path == other and settings.bucket == "team-bucket"

    monkeypatch.setenv("DL_CONFIG", str(project / "missing.toml"))
    text = error_of(load_settings)
    assert "DL_CONFIG=" in text and "missing.toml" in text and "no such file" in text


# -- precedence ----------------------------------------------------------------------------


def test_file_then_environment_then_flags(project, monkeypatch):
    path = write(project / "dl.toml")
    from_file = f"dl.toml ({path})"
    settings = load_settings()
    assert (settings.max_hours, settings.sources["max_hours"]) == (4.0, from_file)

    monkeypatch.setenv("DL_MAX_HOURS", "2.5")
    monkeypatch.setenv("DL_BUCKET", "env-bucket")
    monkeypatch.setenv("DL_SPOT", "0")
    monkeypatch.setenv("DL_TARGET", "local")
    settings = load_settings()
    assert (settings.max_hours, settings.sources["max_hours"]) == (2.5, "DL_MAX_HOURS")
    assert (settings.bucket, settings.sources["bucket"]) == ("env-bucket", "DL_BUCKET")
    assert (settings.spot, settings.sources["spot"]) == (False, "DL_SPOT")
    assert (settings.target, settings.sources["target"]) == ("local", "DL_TARGET")
    assert (settings.gpu, settings.sources["gpu"]) == ("A10G", from_file)

    settings = load_settings(cli={"max_hours": 1.0, "bucket": "flag-bucket", "spot": True, "target": None})
    assert (settings.max_hours, settings.sources["max_hours"]) == (1.0, "--max-hours")
    assert (settings.bucket, settings.sources["bucket"]) == ("flag-bucket", "--bucket")
    assert (settings.spot, settings.sources["spot"]) == (True, "--spot")
    assert settings.sources["target"] == "DL_TARGET", "None means the flag was not given"
    assert load_settings(cli={"spot": False}).sources["spot"] == "--on-demand"


def test_flags_may_be_strings_and_other_options_are_ignored(project):
    settings = load_settings(cli={"volume_gb": "200", "nodes": 2, "image": "x"})
    assert (settings.volume_gb, settings.sources["volume_gb"]) == (200, "--volume-gb")


def test_empty_variable_counts_as_unset(project, monkeypatch):
    write(project / "dl.toml")
    monkeypatch.setenv("DL_BUCKET", "")
    assert load_settings().bucket == "acme-dl"


@pytest.mark.parametrize(
    "file_region, env, expected",
    [
        (None, {}, (None, "default")),
        (None, {"AWS_DEFAULT_REGION": "us-west-2"}, ("us-west-2", "AWS_DEFAULT_REGION")),
        (None, {"AWS_DEFAULT_REGION": "us-west-2", "AWS_REGION": "us-east-2"}, ("us-east-2", "AWS_REGION")),
        ("eu-west-1", {"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "us-west-2"}, ("eu-west-1", "file")),
        ("eu-west-1", {"AWS_REGION": "us-east-2", "DL_REGION": "ap-south-1"}, ("ap-south-1", "DL_REGION")),
    ],
)
def test_region_the_project_file_beats_the_shells_aws_region(project, monkeypatch, file_region, env, expected):
    if file_region:
        write(project / "dl.toml", f'[aws]\nregion = "{file_region}"\n')
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = load_settings()
    source = settings.sources["region"]
    assert (settings.region, "file" if source.startswith("dl.toml (") else source) == expected
    assert load_settings(cli={"region": "sa-east-1"}).sources["region"] == "--region"


def test_profile_the_shells_aws_profile_beats_the_project_file(project, monkeypatch):
    write(project / "dl.toml", '[aws]\nprofile = "ml"\nregion = "eu-west-1"\n')
    settings = load_settings()
    assert settings.profile == "ml" and settings.sources["profile"].startswith("dl.toml (")
    assert settings.session_kwargs() == {"region_name": "eu-west-1", "profile_name": "ml"}

    monkeypatch.setenv("AWS_PROFILE", "personal")
    settings = load_settings()
    assert (settings.profile, settings.sources["profile"]) == ("personal", "AWS_PROFILE")
    # boto3 reads AWS_PROFILE itself (so keys in the environment still win, as boto3 documents)
    assert settings.session_kwargs() == {"region_name": "eu-west-1"}

    monkeypatch.setenv("DL_PROFILE", "dl-only")
    assert load_settings().profile == "dl-only"
    settings = load_settings(cli={"profile": "flag"})
    assert (settings.profile, settings.session_kwargs()["profile_name"]) == ("flag", "flag")


def test_profile_in_the_file_gives_way_to_credentials_in_the_environment(project, monkeypatch):
    write(project / "dl.toml", '[aws]\nprofile = "ml"\n')
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    settings = load_settings()
    assert settings.profile is None
    assert "AWS_ACCESS_KEY_ID" in settings.sources["profile"]
    assert "profile_name" not in settings.session_kwargs()
    assert load_settings(cli={"profile": "ml"}).profile == "ml", "an explicit --profile still wins"


def test_endpoint_url_comes_from_aws_endpoint_url(project, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    settings = load_settings()
    assert (settings.endpoint_url, settings.sources["endpoint_url"]) == ("http://127.0.0.1:5000", "AWS_ENDPOINT_URL")


def test_gpu_and_instance_type_the_higher_level_wins(project, monkeypatch):
    write(project / "dl.toml")  # gpu = "A10G"
    settings = load_settings(cli={"instance_type": "ml.p4d.24xlarge"})
    assert (settings.instance_type, settings.gpu) == ("ml.p4d.24xlarge", None)
    assert settings.sources["gpu"] == "default (overridden by --instance-type)"

    monkeypatch.setenv("DL_INSTANCE_TYPE", "ml.g5.2xlarge")
    assert load_settings(cli={"gpu": "A100:8"}).gpu == "A100:8"
    assert load_settings().instance_type == "ml.g5.2xlarge"

    write(project / "dl.toml", '[defaults]\ngpu = "T4"\ninstance_type = "ml.g5.xlarge"\n')
    monkeypatch.delenv("DL_INSTANCE_TYPE")
    assert "alternatives" in error_of(load_settings)


def test_empty_gpu_in_the_file_means_cpu(project):
    path = write(project / "dl.toml", '[defaults]\ngpu = ""\n')
    settings = load_settings()
    assert settings.gpu is None and settings.sources["gpu"] == f"dl.toml ({path})"


# -- checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "var, value, expected",
    [
        ("DL_SPOT", "maybe", "DL_SPOT='maybe' is not true or false"),
        ("DL_MAX_HOURS", "abc", "DL_MAX_HOURS='abc' is not a number"),
        ("DL_MAX_HOURS", "-1", "DL_MAX_HOURS='-1' must be more than 0"),
        ("DL_VOLUME_GB", "1.5", "DL_VOLUME_GB='1.5' is not a whole number"),
        ("DL_TARGET", "mars", "DL_TARGET='mars' is not a target. Targets: local, sagemaker"),
        ("DL_TARGET", "sagemakr", "Did you mean 'sagemaker'?"),
        ("DL_BUCKET", "s3://acme-dl/x", "Use the name alone: 'acme-dl'"),
        ("DL_BUCKET", "Acme_DL", "DL_BUCKET='Acme_DL' is not a valid S3 bucket name"),
        ("DL_ROLE_ARN", "dl-role", "DL_ROLE_ARN='dl-role' is not an IAM role ARN"),
        ("DL_INSTANCE_TYPE", "g5.xlarge", "e.g. 'ml.g5.xlarge'"),
        ("AWS_REGION", "Ireland", "AWS_REGION='Ireland' is not an AWS region"),
        ("AWS_ENDPOINT_URL", "localhost:5000", "AWS_ENDPOINT_URL='localhost:5000' is not an http(s) URL"),
    ],
)
def test_bad_environment_values_name_their_variable(project, monkeypatch, var, value, expected):
    monkeypatch.setenv(var, value)
    assert expected in error_of(load_settings)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[defaults]\ntarget = "mars"\n', "target = 'mars' under [defaults] in"),
        ("[defaults]\nmax_hours = -2\n", "max_hours = -2 under [defaults] in"),
        ('[defaults]\nvolume_gb = "50"\n', "volume_gb = '50' under [defaults] in"),
        ("[defaults]\nframework_version = 2.8\n", 'is not a string. Quote it: framework_version = "2.8"'),
        ('[defaults]\nspot = "yes"\n', "is not true or false"),
        ("[tags]\ncost = 12\n", "Tag 'cost' in [tags] of"),
        ('[tags]\n"aws:x" = "y"\n', "Tag 'aws:x'"),
        ('aws = "x"\n', "'aws' in"),
    ],
)
def test_bad_file_values_name_the_file_and_key(project, text, expected):
    path = write(project / "dl.toml", text)
    message = error_of(load_settings)
    assert expected in message and str(path) in message


def test_bad_flag_value_names_the_flag(project):
    assert "--max-hours 'abc' is not a number" in error_of(load_settings, cli={"max_hours": "abc"})


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[defaults]\ngpus = "A10G"\n', "Unknown key 'gpus' under [defaults] in {path}. Did you mean 'gpu'?"),
        ('[defaults]\nbucket = "b-1"\n', "Did you mean [aws] bucket?"),
        ('[default]\ntarget = "local"\n', "Unknown key 'default' in {path}. Did you mean 'defaults'?"),
        ('region = "eu-west-1"\n', "Did you mean [aws] region?"),
    ],
)
def test_unknown_keys_suggest_the_right_one(project, text, expected):
    path = write(project / "dl.toml", text)
    message = error_of(load_settings)
    assert expected.format(path=path) in message
    if "under [defaults]" in expected:
        assert "Known keys: target, gpu, instance_type, spot" in message


def test_invalid_toml_names_the_file_and_line(project):
    path = write(project / "dl.toml", '[aws]\nbucket = "acme-dl\n')
    message = error_of(load_settings)
    assert f"{path} is not valid TOML" in message and "line 2" in message


def test_require_says_what_is_missing_and_how_to_set_it(project):
    settings = load_settings()
    message = error_of(require, settings, "bucket", purpose="the sagemaker target")
    assert message == (
        "No S3 bucket configured for the sagemaker target. Run `dl infra deploy`, set DL_BUCKET, "
        "or add `bucket = ...` under [aws] in dl.toml."
    )
    message = error_of(require, settings, "region", "role_arn", purpose="the sagemaker target")
    assert message.startswith("No AWS region or execution role configured for the sagemaker target.")
    assert "DL_REGION and DL_ROLE_ARN" in message and "`region = ...`, `role_arn = ...` under [aws]" in message
    write(project / "dl.toml")
    require(load_settings(), "bucket", "role_arn", "region", purpose="the sagemaker target")  # all there: quiet


# -- writing -------------------------------------------------------------------------------


def test_write_creates_dl_toml_in_the_current_folder(project):
    path = write_settings({"aws": {"bucket": "new-bucket", "region": "us-east-1"}, "defaults": {"target": "sagemaker"}})
    assert path == project / "dl.toml"
    settings = load_settings()
    assert (settings.bucket, settings.region, settings.target) == ("new-bucket", "us-east-1", "sagemaker")
    assert settings.config_path == path


def test_write_edits_only_the_given_keys_and_keeps_comments(project):
    path = write(project / "dl.toml")
    sub = project / "sub"
    sub.mkdir()
    written = write_settings(
        {
            "aws": {"bucket": "acme-dl-2", "scheduler_role_arn": SCHEDULER},
            "defaults": {"max_hours": 8, "gpu": None},
            "tags": {"cost-center": "42", "app:name": 'say "hi"'},
        },
        cwd=sub,  # found by walking up, as load does
    )
    assert written == path
    text = path.read_text()
    for line in [
        "# Project settings for dl",
        'region = "eu-west-1"   # Ireland: the bucket lives here',
        'target = "sagemaker"   # local | sagemaker',
        "# extra tags on every training job",
        'team = "vision"',
        'bucket = "acme-dl-2"',
        "max_hours = 8",
    ]:
        assert line in text.splitlines(), line
    assert "gpu" not in text, "None removes the key"
    settings = load_settings()
    assert (settings.bucket, settings.max_hours, settings.gpu, settings.spot) == ("acme-dl-2", 8.0, None, True)
    assert settings.scheduler_role_arn == SCHEDULER
    assert settings.tags == {"team": "vision", "cost-center": "42", "app:name": 'say "hi"'}
    # a new key goes into its own table, before the comment that introduces the next one
    lines = text.splitlines()
    assert lines.index(f'scheduler_role_arn = "{SCHEDULER}"') < lines.index("[defaults]")
    assert not [p for p in project.iterdir() if p.name.endswith(".tmp")], "no temp file left behind"


def test_write_keeps_a_comment_after_the_changed_value_and_crlf(project):
    path = project / "dl.toml"
    path.write_bytes(b'[aws]\r\nbucket = "old-1"  # shared bucket\r\n')
    write_settings({"aws": {"bucket": "new-1"}, "defaults": {"spot": True}})
    assert path.read_bytes() == b'[aws]\r\nbucket = "new-1"  # shared bucket\r\n\r\n[defaults]\r\nspot = true\r\n'


def test_write_refuses_bad_values_and_leaves_the_file_alone(project):
    path = write(project / "dl.toml")
    assert "is not a target" in error_of(write_settings, {"defaults": {"target": "mars"}})
    assert "Did you mean 'defaults.gpu'?" in error_of(write_settings, {"defaults": {"gpus": "A10G"}})
    assert path.read_text() == EXAMPLE


def test_write_refuses_a_file_in_a_form_it_does_not_edit(project):
    path = write(project / "dl.toml", 'aws.bucket = "dotted-1"\n')
    assert load_settings().bucket == "dotted-1"
    assert "Edit it by hand" in error_of(write_settings, {"aws": {"region": "eu-west-1"}})
    assert path.read_text() == 'aws.bucket = "dotted-1"\n'


def test_write_goes_to_the_file_dl_config_names(project, monkeypatch):
    monkeypatch.setenv("DL_CONFIG", str(project / "cfg" / "mine.toml"))
    path = write_settings({"aws": {"bucket": "named-1"}})
    assert path == project / "cfg" / "mine.toml" and not (project / "dl.toml").exists()
    assert load_settings().bucket == "named-1"


def test_config_module_imports_no_cli_or_aws_library():
    code = "import sys, orchestrator.config; print(sorted(m for m in sys.modules if m.split('.')[0] in {'boto3', 'botocore', 'typer', 'click', 'rich'}))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the CLI -------------------------------------------------------------------------------


def test_dl_config_shows_values_and_sources_and_no_secrets(project, monkeypatch):
    path = write(project / "dl.toml")
    monkeypatch.setenv("DL_MAX_HOURS", "3")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-not-a-real-secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    result = invoke("config")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Config file  {path}"
    assert lines[1].split() == ["KEY", "VALUE", "FROM"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.startswith(("aws.", "defaults.", "tags"))}
    assert rows["aws.bucket"] == ["acme-dl", "dl.toml"]
    assert rows["defaults.max_hours"] == ["3.0", "DL_MAX_HOURS"]
    assert rows["aws.prefix"] == ["dl", "default"]
    assert rows["tags.team"] == ["vision", "dl.toml"]
    assert "Credentials  the environment (AWS_ACCESS_KEY_ID)" in result.stdout
    assert "not-a-real-secret" not in result.output and "AKIAIOSFODNN7EXAMPLE" not in result.output

    result = invoke("config", "--json")
    data = json.loads(result.stdout)
    assert data["bucket"] == "acme-dl" and data["config_path"] == str(path)
    assert data["sources"]["max_hours"] == "DL_MAX_HOURS" and data["max_hours"] == 3.0
    assert "not-a-real-secret" not in result.output and "AKIAIOSFODNN7EXAMPLE" not in result.output


def test_dl_config_without_a_file_says_defaults_apply(project):
    result = invoke("config")
    assert result.exit_code == 0
    assert f"no dl.toml in {project} or above; defaults apply" in result.stdout
    assert "`dl config set aws.bucket NAME`" in result.stdout
    result = invoke("config", "path")
    assert result.exit_code == 1 and "No dl.toml" in result.stderr


def test_dl_config_set_round_trip(project, monkeypatch):
    result = invoke("config", "set", "defaults.spot", "true")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Set defaults.spot = true in {project / 'dl.toml'}")
    settings = load_settings()
    assert settings.spot is True and settings.sources["spot"].startswith("dl.toml (")

    assert invoke("config", "set", "defaults.max_hours", "6").exit_code == 0
    assert invoke("config", "set", "tags.team", "vision").exit_code == 0
    assert invoke("config", "path").stdout.strip() == str(project / "dl.toml")
    settings = load_settings()
    assert (settings.spot, settings.max_hours, settings.tags) == (True, 6.0, {"team": "vision"})

    monkeypatch.setenv("DL_SPOT", "false")
    result = invoke("config", "set", "defaults.spot", "yes")
    assert "Note: DL_SPOT overrides it in this shell." in result.stdout

    assert invoke("config", "unset", "tags.team").exit_code == 0
    assert load_settings().tags == {}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["defaults.spot", "maybe"], "defaults.spot 'maybe' is not true or false"),
        (["defaults.gpus", "A10G"], "Did you mean 'defaults.gpu'?"),
        (["bucket", "acme-dl"], "Did you mean 'aws.bucket'?"),
    ],
)
def test_dl_config_set_rejects_bad_input_with_exit_2(project, args, expected):
    result = invoke("config", "set", *args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert not (project / "dl.toml").exists()


def test_dl_config_runs_as_a_real_command(project):
    write(project / "dl.toml")
    env = {k: v for k, v in os.environ.items() if k not in _VARS}
    out = subprocess.run([sys.executable, "-m", "orchestrator", "config", "--json"], capture_output=True, text=True,
                         env=env, cwd=project, check=True)  # fmt: skip
    assert json.loads(out.stdout)["region"] == "eu-west-1"


def test_dl_config_set_keeps_every_comment_and_edits_a_value_on_several_lines(project):
    # tomlkit edits the document itself: a value that spans lines (which the old line editor refused)
    # is replaced like any other, and every comment and blank line around it stays.
    text = EXAMPLE.replace('bucket = "acme-dl"', 'bucket = """\nacme-dl"""  # multi-line')
    path = write(project / "dl.toml", text)
    assert load_settings().bucket == "acme-dl"  # TOML drops the newline after the opening quotes
    result = invoke("config", "set", "aws.bucket", "acme-dl-3")
    assert result.exit_code == 0, result.output
    assert path.read_text() == EXAMPLE.replace('bucket = "acme-dl"', 'bucket = "acme-dl-3"  # multi-line')
