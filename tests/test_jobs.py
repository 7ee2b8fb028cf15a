"""Trainjob declarations: reading job.toml, typed --set overrides, and finding jobs by name or path."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from orchestrator.errors import DlError, JobError, ParamError, UsageError
from orchestrator.jobs import JOB_FILE, TRAINER_PARAMS, find_job, job_roots, list_jobs, load_job

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "trainjobs" / "mnist"

MINIMAL = """\
[job]
model = "model:M"
datamodule = "data:D"
"""


def write_job(folder: Path, toml: str = MINIMAL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JOB_FILE).write_text(toml)
    return folder


def assert_one_line(err: DlError) -> None:
    assert err.message and "\n" not in err.message
    assert "\n" not in err.hint


@pytest.fixture(scope="module")
def mnist():
    return load_job(MNIST)


# -- the bundled mnist job -------------------------------------------------------------------------


def test_mnist_params_match_its_job_toml(mnist):
    doc = tomllib.loads((MNIST / JOB_FILE).read_text())

    assert mnist.name == "mnist"
    assert mnist.path == MNIST
    assert mnist.model == doc["job"]["model"] == "model:DigitCNN"
    assert mnist.datamodule == doc["job"]["datamodule"]
    assert (mnist.monitor, mnist.mode) == ("val_acc", "max")
    assert list(mnist.params) == list(doc["params"])
    for name, decl in doc["params"].items():
        param = mnist.params[name]
        assert param.type == decl["type"], name
        assert param.default == decl["default"], name
        assert type(param.default) is {"int": int, "float": float}[decl["type"]], name
        assert param.min == decl.get("min"), name
        assert param.max == decl.get("max"), name
        assert param.help == decl["help"], name


def test_mnist_trainer_params_take_the_jobs_defaults_over_the_runtimes(mnist):
    assert set(mnist.trainer) == set(TRAINER_PARAMS)
    assert mnist.trainer["max_epochs"].default == 15
    assert mnist.trainer["max_epochs"].min == 1  # the runtime's bounds are kept
    for name, base in TRAINER_PARAMS.items():
        if name != "max_epochs":
            assert mnist.trainer[name] == base, name
    assert TRAINER_PARAMS["max_epochs"].default == 10  # the job's table did not change the shared one
    assert set(mnist.all_params) == set(mnist.params) | set(TRAINER_PARAMS)


def test_job_to_json_lists_params_and_trainer(mnist):
    out = mnist.to_json()

    assert out["name"] == "mnist"
    assert [p["name"] for p in out["params"]] == list(mnist.params)
    lr = next(p for p in out["params"] if p["name"] == "lr")
    assert lr == {"name": "lr", "type": "float", "default": 0.002, "help": "Adam learning rate", "min": 0.0}
    precision = next(p for p in out["trainer"] if p["name"] == "precision")
    assert precision["choices"] == ["32-true", "16-mixed", "bf16-mixed"]


# -- resolving --set overrides ---------------------------------------------------------------------


def test_resolve_without_overrides_gives_every_default(mnist):
    values = mnist.resolve()

    assert values == {name: p.default for name, p in mnist.all_params.items()}
    assert values["max_epochs"] == 15
    assert values["lr"] == 0.002
    assert values["precision"] == "32-true"
    assert mnist.resolve({}) == values


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("batch_size", "128", 128),
        ("batch_size", " 32 ", 32),
        ("lr", "1e-3", 1e-3),
        ("lr", "0.5", 0.5),
        ("lr", "2", 2.0),
        ("fast_dev_run", "true", True),
        ("fast_dev_run", "False", False),
        ("fast_dev_run", "1", True),
        ("fast_dev_run", "no", False),
        ("fast_dev_run", "YES", True),
        ("precision", "bf16-mixed", "bf16-mixed"),
        ("limit_train_batches", "3", 3),
        ("limit_train_batches", "0.5", 0.5),
        ("max_epochs", "1", 1),
        ("num_workers", "3", 3),
        ("num_workers", "auto", "auto"),
        ("num_workers", "AUTO", "auto"),
    ],
)
def test_resolve_parses_each_type(mnist, key, raw, expected):
    value = mnist.resolve({key: raw})[key]

    assert value == expected
    assert type(value) is type(expected)


def test_resolve_keeps_other_defaults(mnist):
    values = mnist.resolve({"lr": "0.1", "max_epochs": "2"})

    assert (values["lr"], values["max_epochs"]) == (0.1, 2)
    assert values["batch_size"] == 64


def test_unknown_parameter_suggests_the_close_one(mnist):
    with pytest.raises(ParamError, match="Unknown parameter 'lrr' for job mnist") as info:
        mnist.resolve({"lrr": "0.1"})

    assert "Did you mean 'lr'?" in info.value.hint
    assert "dl jobs mnist" in info.value.hint
    assert info.value.exit_code == 2
    assert_one_line(info.value)


def test_unknown_parameter_with_nothing_close_has_no_suggestion(mnist):
    with pytest.raises(ParamError) as info:
        mnist.resolve({"zzzzzz": "1"})

    assert "Did you mean" not in info.value.hint


@pytest.mark.parametrize(
    ("key", "raw", "expects"),
    [
        ("batch_size", "abc", "an integer"),
        ("batch_size", "1.5", "an integer"),
        ("lr", "fast", "a number"),
        ("fast_dev_run", "maybe", "true or false"),
        ("limit_train_batches", "half", "a batch count"),
        ("num_workers", "many", "a worker count (int) or auto"),
    ],
)
def test_ill_typed_value_names_param_and_type(mnist, key, raw, expects):
    with pytest.raises(ParamError, match=re.escape(f"Parameter {key} expects {expects}")) as info:
        mnist.resolve({key: raw})

    assert f"got {raw!r}" in info.value.message
    assert f"--set {key}=" in info.value.hint
    assert_one_line(info.value)


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("lr", "-0.1", "lr must be >= 0.0"),
        ("dropout", "1.5", "dropout must be <= 1.0"),
        ("val_fraction", "0.001", "val_fraction must be >= 0.01"),
        ("batch_size", "0", "batch_size must be >= 1"),
        ("max_epochs", "0", "max_epochs must be >= 1"),
        ("num_workers", "-1", "num_workers must be >= 0"),
    ],
)
def test_out_of_range_values_are_refused(mnist, key, raw, message):
    with pytest.raises(ParamError, match=message) as info:
        mnist.resolve({key: raw})

    assert_one_line(info.value)


def test_bounds_are_inclusive(mnist):
    values = mnist.resolve({"dropout": "1.0", "lr": "0", "batch_size": "1"})

    assert (values["dropout"], values["lr"], values["batch_size"]) == (1.0, 0.0, 1)


def test_choices_are_enforced(mnist):
    with pytest.raises(ParamError, match="precision must be one of 32-true, 16-mixed, bf16-mixed") as info:
        mnist.resolve({"precision": "64"})

    assert "'64'" in info.value.message
    assert_one_line(info.value)


# -- job.toml validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "complaint"),
    [
        pytest.param('[job]\ndatamodule = "data:D"\n', "model must be 'module:Class'", id="missing-model"),
        pytest.param('[job]\nmodel = "model:M"\n', "datamodule must be 'module:Class'", id="missing-datamodule"),
        pytest.param(
            '[job]\nmodel = "model.M"\ndatamodule = "data:D"\n', "model must be 'module:Class'", id="no-colon"
        ),
        pytest.param(
            '[job]\nmodel = "model:1M"\ndatamodule = "data:D"\n', "model must be 'module:Class'", id="bad-class"
        ),
        pytest.param(
            '[job]\nmodel = "model:M"\ndatamodule = ":D"\n', "datamodule must be 'module:Class'", id="no-module"
        ),
        pytest.param(
            '[job]\nmodel = 3\ndatamodule = "data:D"\n', "model must be 'module:Class'", id="model-not-string"
        ),
        pytest.param(MINIMAL + 'mode = "maximize"\n', "mode must be 'min' or 'max'", id="bad-mode"),
        pytest.param(MINIMAL + '[params.lr]\ntype = "float"\n', "needs a type and a default", id="no-default"),
        pytest.param(MINIMAL + "[params.lr]\ndefault = 0.1\n", "needs a type and a default", id="no-type"),
        pytest.param(MINIMAL + "[params]\nlr = 0.1\n", "needs a type and a default", id="param-not-table"),
        pytest.param(MINIMAL + '[params.lr]\ntype = "list"\ndefault = 1\n', "type must be one of", id="unknown-type"),
        pytest.param(MINIMAL + '[params.n]\ntype = "int"\ndefault = "three"\n', "is not an integer", id="str-for-int"),
        pytest.param(MINIMAL + '[params.n]\ntype = "int"\ndefault = 1.5\n', "is not an integer", id="float-for-int"),
        pytest.param(MINIMAL + '[params.n]\ntype = "int"\ndefault = true\n', "is not an integer", id="bool-for-int"),
        pytest.param(MINIMAL + '[params.f]\ntype = "bool"\ndefault = 1\n', "is not true or false", id="int-for-bool"),
        pytest.param(MINIMAL + '[params.s]\ntype = "str"\ndefault = 1\n', "is not a string", id="int-for-str"),
        pytest.param(
            MINIMAL + '[params.n]\ntype = "int"\ndefault = 0\nmin = 1\n', "n must be >= 1", id="default-below-min"
        ),
        pytest.param(
            MINIMAL + '[params.o]\ntype = "str"\ndefault = "sgd"\nchoices = ["adam"]\n',
            "o must be one of adam",
            id="default-not-a-choice",
        ),
        pytest.param(
            MINIMAL + '[params."2fast"]\ntype = "int"\ndefault = 1\n', "must be a Python identifier", id="bad-name"
        ),
        pytest.param(MINIMAL + '[params.max_epochs]\ntype = "int"\ndefault = 3\n', "clashes", id="clash-with-trainer"),
        pytest.param(MINIMAL + "[trainer]\nepochs = 3\n", "'epochs' is not one of max_epochs", id="unknown-trainer"),
        pytest.param(MINIMAL + '[trainer]\nmax_epochs = "3"\n', "max_epochs", id="trainer-wrong-type"),
        pytest.param(MINIMAL + "[trainer]\nmax_epochs = 0\n", "max_epochs must be >= 1", id="trainer-below-min"),
        pytest.param(MINIMAL + '[trainer]\nprecision = "64"\n', "precision must be one of", id="trainer-choice"),
        pytest.param('[job\nmodel = "model:M"\n', "is not valid TOML", id="invalid-toml"),
        pytest.param('[job]\nmodel = "model:M"\nmodel = "x:Y"\n', "is not valid TOML", id="duplicate-key"),
    ],
)
def test_invalid_job_toml_is_a_job_error_naming_the_file(tmp_path, toml, complaint):
    folder = write_job(tmp_path / "broken", toml)

    with pytest.raises(JobError) as info:
        load_job(folder)

    err = info.value
    assert str(folder / JOB_FILE) in err.message
    assert complaint in err.message
    assert err.exit_code == 2
    assert_one_line(err)


@pytest.mark.parametrize(
    "toml",
    [
        pytest.param('job = "mnist"\n', id="job-not-a-table"),
        pytest.param(MINIMAL.replace("[job]", "params = 3\n[job]"), id="params-not-a-table"),
        pytest.param(MINIMAL.replace("[job]", "trainer = [1, 2]\n[job]"), id="trainer-not-a-table"),
    ],
)
def test_tables_of_the_wrong_kind_are_a_job_error_not_a_crash(tmp_path, toml):
    folder = write_job(tmp_path / "broken", toml)

    with pytest.raises(JobError) as info:
        load_job(folder)

    assert str(folder / JOB_FILE) in info.value.message


def test_missing_job_toml_is_a_job_error(tmp_path):
    (tmp_path / "empty").mkdir()

    with pytest.raises(JobError, match="has no job.toml") as info:
        load_job(tmp_path / "empty")

    assert info.value.hint
    assert_one_line(info.value)


def test_find_unused_parameters_is_a_job_setting_and_a_bool(tmp_path):
    assert load_job(write_job(tmp_path / "plain")).find_unused_parameters is False
    job = load_job(write_job(tmp_path / "asks", MINIMAL.replace("[job]\n", "[job]\nfind_unused_parameters = true\n")))
    assert job.find_unused_parameters is True and job.to_json()["find_unused_parameters"] is True
    with pytest.raises(JobError, match="find_unused_parameters must be true or false"):
        load_job(write_job(tmp_path / "bad", MINIMAL.replace("[job]\n", '[job]\nfind_unused_parameters = "yes"\n')))


def test_num_workers_default_is_a_count_or_auto(tmp_path):
    with pytest.raises(JobError, match="num_workers: default 'all' is not a worker count"):
        load_job(write_job(tmp_path / "folder", MINIMAL + '[trainer]\nnum_workers = "all"\n'))


def test_non_utf8_job_toml_is_a_job_error(tmp_path):
    folder = tmp_path / "latin"
    folder.mkdir()
    (folder / JOB_FILE).write_bytes(b'[job]\ndescription = "caf\xe9"\n')

    with pytest.raises(JobError, match="is not valid TOML"):
        load_job(folder)


def test_valid_declarations_are_read_with_their_types(tmp_path):
    toml = MINIMAL + (
        'name = "custom"\ndescription = "d"\nmonitor = "val_loss"\n'
        '[params.lr]\ntype = "float"\ndefault = 1\nmin = 0\nhelp = "h"\n'
        '[params.opt]\ntype = "str"\ndefault = "adam"\nchoices = ["adam", "sgd"]\n'
        '[params.flag]\ntype = "bool"\ndefault = false\n'
        '[params.steps]\ntype = "batches"\ndefault = 0.25\n'
        '[trainer]\nprecision = "bf16-mixed"\nlimit_val_batches = 4\nnum_workers = "auto"\n'
    )
    job = load_job(write_job(tmp_path / "folder", toml))

    assert (job.name, job.description, job.monitor, job.mode) == ("custom", "d", "val_loss", "min")
    assert job.params["lr"].default == 1.0 and type(job.params["lr"].default) is float  # int widened
    assert job.params["opt"].choices == ("adam", "sgd")
    assert job.params["flag"].default is False
    assert job.params["steps"].default == 0.25
    assert job.trainer["precision"].default == "bf16-mixed"
    assert job.trainer["limit_val_batches"].default == 4
    assert job.trainer["num_workers"].default == "auto"
    assert job.resolve({"opt": "sgd", "steps": "7"})["steps"] == 7
    with pytest.raises(ParamError, match="opt must be one of adam, sgd"):
        job.resolve({"opt": "rmsprop"})


# -- finding jobs ----------------------------------------------------------------------------------


def test_find_job_by_name_finds_the_bundled_mnist_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv("DL_JOBS_PATH", raising=False)
    monkeypatch.chdir(tmp_path)

    job = find_job("mnist")

    assert job.name == "mnist"
    assert job.path.resolve() == MNIST
    assert MNIST.parent in job_roots()


def test_dl_jobs_path_adds_a_folder(tmp_path, monkeypatch):
    extra = tmp_path / "my-jobs"
    write_job(extra / "toyjob")
    monkeypatch.setenv("DL_JOBS_PATH", os.pathsep.join([str(tmp_path / "missing"), str(extra)]))
    monkeypatch.chdir(tmp_path)

    job = find_job("toyjob")

    assert job.name == "toyjob"
    assert job.path == extra / "toyjob"
    assert find_job("mnist").path.resolve() == MNIST  # shadows nothing
    names = [j.name for j in list_jobs()]
    assert names == sorted(names)
    assert {"mnist", "toyjob"} <= set(names)
    assert job_roots()[0] == tmp_path / "missing"


def test_dl_jobs_path_comes_first_when_names_collide(tmp_path, monkeypatch):
    extra = tmp_path / "my-jobs"
    write_job(extra / "mnist", MINIMAL + 'description = "my own mnist"\n')
    monkeypatch.setenv("DL_JOBS_PATH", str(extra))
    monkeypatch.chdir(tmp_path)

    assert find_job("mnist").description == "my own mnist"
    listed = [j for j in list_jobs() if j.name == "mnist"]
    assert [j.description for j in listed] == ["my own mnist"]


def test_job_listed_under_its_declared_name_can_be_found_by_that_name(tmp_path, monkeypatch):
    # [job] name = "..." renames a job in `dl jobs`; the name shown there must work with `dl train`.
    extra = tmp_path / "my-jobs"
    write_job(extra / "folder-name", MINIMAL + 'name = "declared"\n')
    monkeypatch.setenv("DL_JOBS_PATH", str(extra))
    monkeypatch.chdir(tmp_path)

    assert "declared" in [j.name for j in list_jobs()]
    assert find_job("declared").path == extra / "folder-name"


@pytest.mark.parametrize("style", ["dot-relative", "absolute", "nested-relative"])
def test_find_job_by_path(tmp_path, monkeypatch, style):
    folder = write_job(tmp_path / "work" / "x")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("DL_JOBS_PATH", raising=False)
    arg = {"dot-relative": "./x", "absolute": str(folder), "nested-relative": "../work/x"}[style]

    job = find_job(arg)

    assert job.path == folder
    assert job.path.is_absolute()
    assert job.name == "x"


def test_path_without_job_toml_is_a_job_error(tmp_path, monkeypatch):
    (tmp_path / "plain").mkdir()
    monkeypatch.chdir(tmp_path)

    with pytest.raises(JobError, match="not a trainjob folder") as info:
        find_job("./plain")

    assert "dl jobs" in info.value.hint
    assert_one_line(info.value)


def test_unknown_name_suggests_a_close_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DL_JOBS_PATH", raising=False)
    monkeypatch.chdir(tmp_path)

    with pytest.raises(JobError, match="Unknown job 'mnsit'") as info:
        find_job("mnsit")

    assert "Did you mean 'mnist'?" in info.value.hint
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert_one_line(info.value)


def test_unknown_name_with_nothing_close(tmp_path, monkeypatch):
    monkeypatch.delenv("DL_JOBS_PATH", raising=False)
    monkeypatch.chdir(tmp_path)

    with pytest.raises(JobError) as info:
        find_job("qwertyuiop")

    assert "Did you mean" not in info.value.hint
    assert "dl jobs" in info.value.hint


def test_trainjobs_folder_above_the_cwd_is_searched(tmp_path, monkeypatch):
    project = tmp_path / "project"
    write_job(project / "trainjobs" / "localjob")
    deep = project / "src" / "deeper"
    deep.mkdir(parents=True)
    write_job(tmp_path / "trainjobs" / "farther")  # only the nearest trainjobs/ is searched
    monkeypatch.delenv("DL_JOBS_PATH", raising=False)
    monkeypatch.chdir(deep)

    job = find_job("localjob")

    assert job.path == project / "trainjobs" / "localjob"
    assert job_roots() == [project / "trainjobs", MNIST.parent]
    with pytest.raises(JobError, match="Unknown job 'farther'"):
        find_job("farther")
    assert {"localjob", "mnist"} <= {j.name for j in list_jobs()}


def test_explicit_cwd_is_used_for_the_upward_search(tmp_path, monkeypatch):
    project = tmp_path / "project"
    write_job(project / "trainjobs" / "localjob")
    monkeypatch.delenv("DL_JOBS_PATH", raising=False)
    monkeypatch.chdir(tmp_path)  # the process cwd has no trainjobs/ above it

    assert find_job("localjob", cwd=project).path == project / "trainjobs" / "localjob"
    with pytest.raises(JobError, match="Unknown job 'localjob'"):
        find_job("localjob")
