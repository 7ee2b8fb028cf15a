"""Training image URIs from dl's shipped table (made from the SageMaker SDK's): offline, no SDK, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.backends.sagemaker import image_table
from orchestrator.backends.sagemaker.catalog import load
from orchestrator.backends.sagemaker.images import (
    DEFAULT_FRAMEWORK_VERSION,
    DEFAULT_PY_VERSION,
    supported_versions,
    training_image,
)
from orchestrator.errors import UsageError

REPO = Path(__file__).resolve().parent.parent

DLC = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/pytorch-training:(.+)-(cpu|gpu)-(py3\d+)$")


def test_us_east_1_gpu_and_cpu(tmp_path):
    gpu = training_image("us-east-1", DEFAULT_FRAMEWORK_VERSION, None, True, "ml.g5.xlarge")
    cpu = training_image("us-east-1", DEFAULT_FRAMEWORK_VERSION, None, False, "ml.m5.xlarge")
    base = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training"
    assert gpu == f"{base}:{DEFAULT_FRAMEWORK_VERSION}-gpu-{DEFAULT_PY_VERSION}"
    assert cpu == f"{base}:{DEFAULT_FRAMEWORK_VERSION}-cpu-{DEFAULT_PY_VERSION}"
    assert DLC.match(gpu) and DLC.match(cpu)


def test_default_is_the_newest_version_the_tables_know(tmp_path):
    versions = supported_versions()
    assert versions[-1] == DEFAULT_FRAMEWORK_VERSION
    assert {"2.7.1", "2.8.0", "2.9.0", "2.10.0"} <= set(versions)
    assert all(v.count(".") == 2 for v in versions)  # no "2.10"-style aliases


def test_explicit_versions(tmp_path):
    uri = training_image("us-west-2", "2.9.0", "py312", True, "ml.p4d.24xlarge")
    assert uri == "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.9.0-gpu-py312"
    # py_version None on a non-default version: the one Python its images have.
    assert training_image("us-west-2", "2.8.0", None, False, "ml.c5.xlarge").endswith(":2.8.0-cpu-py312")


def test_other_regions_have_their_own_registry(tmp_path):
    east = DLC.match(training_image("us-east-1", DEFAULT_FRAMEWORK_VERSION, None, True, "ml.g5.xlarge"))
    tokyo = DLC.match(training_image("ap-northeast-1", DEFAULT_FRAMEWORK_VERSION, None, True, "ml.g5.xlarge"))
    china = DLC.match(training_image("cn-north-1", DEFAULT_FRAMEWORK_VERSION, None, True, "ml.g5.xlarge"))
    assert tokyo.group(2) == "ap-northeast-1" and tokyo.group(0) != east.group(0)
    assert china.group(3) == ".cn" and china.group(1) != east.group(1)


def test_every_catalog_instance_gets_the_matching_processor(tmp_path):
    for inst in load().instances:
        uri = training_image("us-east-1", DEFAULT_FRAMEWORK_VERSION, None, inst.is_gpu, inst.type)
        assert DLC.match(uri).group(5) == ("gpu" if inst.is_gpu else "cpu"), inst.type


def test_gpu_flag_must_match_instance_type(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        training_image("us-east-1", DEFAULT_FRAMEWORK_VERSION, None, True, "ml.m5.xlarge")


@pytest.mark.parametrize(
    ("region", "version", "py", "expected"),
    [
        ("us-east-1", "9.9.9", None, ["'9.9.9'", "2.10.0", "2.9.0"]),
        ("us-east-1", "banana", "py313", ["'banana'", "2.10.0"]),
        ("mars-1", DEFAULT_FRAMEWORK_VERSION, None, ["'mars-1'", "us-east-1"]),
        ("us-east-1", DEFAULT_FRAMEWORK_VERSION, "py27", ["py313", "not py27"]),
    ],
)
def test_bad_input_is_a_one_line_usage_error(tmp_path, region, version, py, expected):
    with pytest.raises(UsageError) as err:
        training_image(region, version, py, True, "ml.g5.xlarge")
    text = str(err.value)
    assert "\n" not in text and len(text) < 200, text
    for part in expected:
        assert part in text, text


def test_the_shipped_table_is_what_sagemaker_core_gives_now():
    # build() also checks every URI the table gives against the SDK's image_uris.retrieve (every
    # version, alias, Python, processor and region in it). A failure here after a sagemaker-core
    # upgrade means: python -m orchestrator.backends.sagemaker.image_table, and review the diff.
    fresh = image_table.build()
    assert image_table.same(fresh, image_table.shipped()), "images.json is out of date: regenerate it"
    assert fresh["repository"] == "pytorch-training" and len(fresh["registries"]) >= 30
    assert min(fresh["versions"], key=lambda v: tuple(map(int, v.split(".")))) == "2.1.0"  # what Lightning needs


def test_a_short_alias_keeps_its_tag_as_the_sdk_does():
    uri = training_image("eu-west-1", "2.10", None, True, "ml.g5.xlarge")
    assert uri == "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.10-gpu-py313"


def test_versions_older_than_lightning_supports_are_not_offered():
    with pytest.raises(UsageError, match="'1.13.1'"):
        training_image("us-east-1", "1.13.1", None, True, "ml.g5.xlarge")


_CALL = """
import json, socket, sys
def no_network(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        raise RuntimeError(f"network used: {event} {args}")
sys.addaudithook(no_network)
from orchestrator.backends.sagemaker.images import DEFAULT_FRAMEWORK_VERSION, training_image
uri = training_image("us-east-1", DEFAULT_FRAMEWORK_VERSION, None, True, "ml.g5.xlarge")
heavy = sorted(m for m in ("sagemaker", "boto3", "botocore") if m in sys.modules)
print(json.dumps({"uri": uri, "imported": "sagemaker" in sys.modules, "heavy": heavy}))
"""


def _call_in_fresh_process(home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        DL_HOME=str(home),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    out = subprocess.run([sys.executable, "-c", _CALL], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_no_launch_imports_the_sdk_and_nothing_needs_aws(tmp_path):
    first = _call_in_fresh_process(tmp_path)  # no credentials, sockets forbidden
    assert first["imported"] is False and first["heavy"] == []
    assert first["uri"].endswith(f"-gpu-{DEFAULT_PY_VERSION}")
    second = _call_in_fresh_process(tmp_path)
    assert second == first
    assert list(tmp_path.iterdir()) == []  # nothing is cached or written: the table is the answer
