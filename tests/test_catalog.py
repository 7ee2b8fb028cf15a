"""The instance catalog: every entry is sane, `choose` picks what the rules say, `dl gpus` shows it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.backends.sagemaker import catalog
from orchestrator.backends.sagemaker.catalog import Catalog, choose, load
from orchestrator.cli import app
from orchestrator.errors import UsageError

REPO = Path(__file__).resolve().parent.parent

REQUIRED_REGIONS = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1"]
REQUIRED_TYPES = (
    [f"ml.g4dn.{s}" for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge")]
    + [
        f"ml.g5.{s}"
        for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")
    ]
    + [
        f"ml.g6.{s}"
        for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")
    ]
    + [f"ml.g6e.{s}" for s in ("xlarge", "2xlarge", "12xlarge", "48xlarge")]
    + ["ml.p3.2xlarge", "ml.p3.8xlarge", "ml.p3.16xlarge", "ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.p5.48xlarge"]
    + ["ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.c5.xlarge", "ml.c5.2xlarge"]
    + ["ml.c5.4xlarge"]
)
# GPU model and count of a few types whose specs are well known.
KNOWN_SPECS = {
    "ml.g4dn.12xlarge": ("T4", 4, 16),
    "ml.g5.xlarge": ("A10G", 1, 24),
    "ml.g6.48xlarge": ("L4", 8, 24),
    "ml.g6e.xlarge": ("L40S", 1, 48),
    "ml.p3.8xlarge": ("V100", 4, 16),
    "ml.p4d.24xlarge": ("A100", 8, 40),
    "ml.p4de.24xlarge": ("A100", 8, 80),
    "ml.p5.48xlarge": ("H100", 8, 80),
}


def cheapest(instances) -> catalog.Instance:
    return min(instances, key=lambda i: (i.price("us-east-1"), i.type))


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


# --- the data ---------------------------------------------------------------------------


def test_header_says_what_the_prices_are():
    cat = load()
    assert cat.as_of == "2026-11-25"
    assert cat.currency == "USD"
    assert "training" in cat.note and "estimate" in cat.note.lower() and "not EC2" in cat.note
    assert cat.default_cpu_instance == "ml.m5.xlarge"


def test_every_entry_is_well_formed():
    cat = load()
    types = [i.type for i in cat.instances]
    assert len(types) == len(set(types)), "duplicate types"
    assert set(REQUIRED_TYPES) <= set(types)
    assert set(REQUIRED_REGIONS) <= set(cat.regions)
    for inst in cat.instances:
        assert inst.type.startswith("ml.") and inst.type.count(".") == 2, inst.type
        assert inst.vcpus > 0 and inst.memory_gib > 0, inst
        assert inst.spot is True, inst
        if inst.gpu is None:
            assert inst.gpus == 0 and inst.gpu_memory_gib == 0, inst
        else:
            assert inst.gpu in cat.gpu_models, inst
            assert inst.gpus >= 1 and inst.gpu_memory_gib > 0, inst
        for region in cat.regions:
            assert inst.price(region) > 0, (inst.type, region)
        # A region that costs more in general costs more for every type.
        assert inst.price("eu-central-1") > inst.price("us-east-1"), inst.type


def test_known_specs():
    cat = load()
    for type_, (gpu, count, memory) in KNOWN_SPECS.items():
        inst = cat.get(type_)
        assert (inst.gpu, inst.gpus, inst.gpu_memory_gib) == (gpu, count, memory), type_


def test_more_of_everything_costs_more():
    """Of two types with the same GPU model, one with at least as much of everything costs more."""

    def size(i):
        return (i.gpus, i.gpu_memory_gib, i.vcpus, i.memory_gib)

    cat = load()
    pairs = 0
    for a in cat.instances:
        for b in cat.instances:
            if a.gpu == b.gpu and size(a) != size(b) and all(x >= y for x, y in zip(size(a), size(b))):
                pairs += 1
                assert a.price("us-east-1") > b.price("us-east-1"), (a.type, b.type)
    assert pairs > 50


def test_price_by_region():
    cat = load()
    assert cat.price("ml.g5.xlarge", "us-east-1") == cat.get("ml.g5.xlarge").price("us-east-1")
    assert cat.price("g5.xlarge", "eu-west-1") > cat.price("g5.xlarge", "us-east-1")
    with pytest.raises(UsageError) as err:
        cat.price("ml.g5.xlarge", "mars-1")
    assert "mars-1" in str(err.value) and "us-east-1" in str(err.value) and "eu-west-1" in str(err.value)


def test_default_region_order(monkeypatch):
    for name in ("DL_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert catalog.default_region() == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert catalog.default_region() == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert catalog.default_region() == "us-west-2"
    monkeypatch.setenv("DL_REGION", "ap-northeast-1")
    assert catalog.default_region() == "ap-northeast-1"


# --- choose ----------------------------------------------------------------------------


def test_neither_gives_the_default_cpu_instance():
    inst = choose()
    assert inst.type == "ml.m5.xlarge" and inst.gpus == 0 and inst.gpu is None
    assert choose(None, None, nodes=3).type == "ml.m5.xlarge"


@pytest.mark.parametrize("given", ["ml.g5.2xlarge", "g5.2xlarge", "ML.G5.2XLARGE", " ml.g5.2xlarge "])
def test_instance_type_exact(given):
    assert choose(instance_type=given).type == "ml.g5.2xlarge"


def test_bare_gpu_is_the_cheapest_single_gpu_instance():
    inst = choose("any")
    singles = [i for i in load().instances if i.gpus == 1]
    assert inst.gpus == 1
    assert inst == cheapest(singles)
    assert inst.price("us-east-1") < min(i.price("us-east-1") for i in singles if i != inst)


@pytest.mark.parametrize("spec", ["A10G", "a10g", "A10g:1"])
def test_gpu_model_is_the_cheapest_with_one_of_it(spec):
    inst = choose(spec)
    assert (inst.gpu, inst.gpus) == ("A10G", 1)
    assert inst == cheapest(i for i in load().instances if i.gpu == "A10G" and i.gpus == 1)
    assert inst.type == "ml.g5.xlarge"


@pytest.mark.parametrize(("spec", "gpu", "count"), [("A100:8", "A100", 8), ("T4:4", "T4", 4), ("l40s:4", "L40S", 4)])
def test_gpu_model_and_count(spec, gpu, count):
    inst = choose(spec)
    assert (inst.gpu, inst.gpus) == (gpu, count)
    assert inst == cheapest(i for i in load().instances if i.gpu == gpu and i.gpus == count)


def test_a100_8_is_the_40gb_p4d():
    assert choose("A100:8").type == "ml.p4d.24xlarge"


def test_count_nobody_has_names_the_counts_that_exist():
    with pytest.raises(UsageError) as err:
        choose("A10G:3")
    assert "A10G" in str(err.value) and "1, 4 or 8" in str(err.value) and "A10G:4" in str(err.value)
    with pytest.raises(UsageError) as err:
        choose("H100")  # no single-H100 type: the error says to ask for 8
    assert "have 8" in str(err.value) and "--gpu H100:8" in str(err.value)


@pytest.mark.parametrize("spec", ["A100:0", "A100:-1", "A100:x", "A100:"])
def test_bad_count(spec):
    with pytest.raises(UsageError, match="whole number"):
        choose(spec)


def test_unknown_gpu_suggests_the_nearest_model():
    with pytest.raises(UsageError) as err:
        choose("A10")
    assert str(err.value) == "Unknown GPU 'A10'. Did you mean 'A10G'? Run `dl gpus` to see the catalog."
    with pytest.raises(UsageError) as err:
        choose("quantum")
    assert "Known GPUs: T4, L4, A10G" in str(err.value)


def test_unknown_instance_type_suggests_the_nearest():
    with pytest.raises(UsageError) as err:
        choose(instance_type="ml.g5.xlrge")
    assert "Unknown instance type 'ml.g5.xlrge'. Did you mean ml.g5.xlarge?" in str(err.value)
    assert err.value.exit_code == 2


def test_both_gpu_and_instance_type_is_an_error():
    with pytest.raises(UsageError, match="not both"):
        choose("A10G", "ml.g5.xlarge")


def test_nodes_must_be_positive():
    with pytest.raises(UsageError, match="at least 1"):
        choose("A10G", nodes=0)


def _tiny(instances: list[dict]) -> dict:
    return {
        "as_of": "2026-01-01",
        "currency": "USD",
        "note": "test",
        "base_region": "us-east-1",
        "region_multipliers": {"us-east-1": 1.0, "eu-west-1": 1.5},
        "gpu_models": ["T4", "A10G"],
        "default_cpu_instance": "ml.m5.xlarge",
        "instances": instances,
    }


def _entry(type_: str, gpu: str | None, gpus: int, price: float, **extra) -> dict:
    return {"type": type_, "gpu": gpu, "gpus": gpus, "gpu_memory_gib": 16 if gpu else 0, "vcpus": 4,
            "memory_gib": 16, "spot": True, "price": price, **extra}  # fmt: skip


def test_cheapest_is_deterministic_on_ties():
    entries = [_entry("ml.zz.xlarge", "T4", 1, 1.0), _entry("ml.aa.xlarge", "T4", 1, 1.0),
               _entry("ml.m5.xlarge", None, 0, 0.2)]  # fmt: skip
    for order in (entries, entries[::-1]):
        cat = Catalog(_tiny(order))
        assert cat.choose("any").type == "ml.aa.xlarge"
        assert cat.choose("T4").type == "ml.aa.xlarge"


def test_region_prices_derive_by_multiplier_unless_overridden():
    cat = Catalog(_tiny([_entry("ml.a.x", "T4", 1, 2.0), _entry("ml.b.x", "T4", 1, 2.0, prices={"eu-west-1": 2.5})]))
    assert cat.price("ml.a.x", "eu-west-1") == 3.0
    assert cat.price("ml.b.x", "eu-west-1") == 2.5
    assert cat.price("ml.b.x", "us-east-1") == 2.0


# --- dl gpus ---------------------------------------------------------------------------


@pytest.fixture
def no_region_env(monkeypatch):
    for name in ("DL_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def _rows(output: str) -> list[list[str]]:
    lines = output.splitlines()
    assert lines[0].startswith("Prices: ")
    assert lines[1].startswith("TYPE ")
    return [line.split() for line in lines[2:]]


def test_dl_gpus_table(no_region_env):
    result = invoke("gpus")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        "Prices: estimated SageMaker training on-demand prices for us-east-1 as of 2026-11-25; "
        "check the AWS pricing page before relying on them."
    )
    rows = _rows(result.output)
    assert ["ml.g5.xlarge", "A10G", "1", "24", "GiB", "4", "16", "GiB", "1.41", "yes"] in rows
    assert len(rows) == len(load().instances)
    # GPU types first, grouped by model in catalog order; CPU types last; cheapest first within a group.
    models = [row[1] for row in rows]
    order = list(load().gpu_models) + ["-"]
    assert models == sorted(models, key=order.index)
    t4 = [float(row[-2]) for row in rows if row[1] == "T4"]
    assert t4 == sorted(t4) and len(t4) == 6


def test_dl_gpus_region_from_env(monkeypatch, no_region_env):
    monkeypatch.setenv("DL_REGION", "eu-central-1")
    result = invoke("gpus", "--gpu", "A10G:1")
    assert result.exit_code == 0, result.output
    assert "for eu-central-1 as of 2026-11-25" in result.output
    expected = f"{load().price('ml.g5.xlarge', 'eu-central-1'):.2f}"
    assert [row for row in _rows(result.output) if row[0] == "ml.g5.xlarge"][0][-2] == expected


def test_dl_gpus_region_from_dl_toml_beats_aws_region(monkeypatch, no_region_env, tmp_path):
    """README's precedence: dl.toml's aws.region outranks a region left over in the shell (AWS_REGION);
    DL_REGION and --region outrank dl.toml."""
    (tmp_path / "dl.toml").write_text('[aws]\nregion = "eu-west-1"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    result = invoke("gpus", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["region"] == "eu-west-1"
    monkeypatch.setenv("DL_REGION", "eu-central-1")
    assert json.loads(invoke("gpus", "--json").output)["region"] == "eu-central-1"
    assert json.loads(invoke("gpus", "--json", "--region", "us-west-2").output)["region"] == "us-west-2"


def test_dl_gpus_json(no_region_env):
    result = invoke("gpus", "--json", "--region", "eu-west-1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["region"] == "eu-west-1" and data["as_of"] == "2026-11-25" and data["currency"] == "USD"
    by_type = {i["type"]: i for i in data["instances"]}
    assert by_type["ml.g5.xlarge"]["gpu"] == "A10G"
    assert by_type["ml.g5.xlarge"]["price_per_hour"] == load().price("ml.g5.xlarge", "eu-west-1")
    assert by_type["ml.m5.xlarge"]["gpus"] == 0


def test_dl_gpus_filter_by_model(no_region_env):
    result = invoke("gpus", "--gpu", "a100")
    assert result.exit_code == 0, result.output
    types = [row[0] for row in _rows(result.output)]
    assert types == ["ml.p4d.24xlarge", "ml.p4de.24xlarge"]
    assert "ml.g5.xlarge" not in result.output


def test_dl_gpus_filter_with_no_match_says_so():
    result = invoke("gpus", "--gpu", "H200:1")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "No instance type has GPUs matching 'H200:1'. Run `dl gpus` to see them all."


def test_dl_gpus_unknown_region_is_one_line():
    line = _one_line_error(invoke("gpus", "--region", "mars-1"))
    assert "mars-1" in line and "us-east-1" in line


def test_dl_gpus_unknown_gpu_is_one_line():
    line = _one_line_error(invoke("gpus", "--gpu", "A10"))
    assert "Did you mean 'A10G'?" in line


def test_dl_gpus_imports_no_cloud_or_training_library():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from orchestrator.cli import app\n"
        "result = CliRunner().invoke(app, ['gpus'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'sagemaker', 'torch', "
        "'lightning', 'pandas'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
