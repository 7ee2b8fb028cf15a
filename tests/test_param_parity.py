"""dl's parser of job parameters and the runtime's agree on every input.

`dl launch --set KEY=VALUE` parses with ``jobs.Param.parse``; in the container the runtime
(orchestrator/runtime/dl_entry.py, which cannot import dl) parses the ``--key value`` words the
toolkit hands it with its own argparse types. For every declared type, every declaration of the
bundled jobs and the trainer's, and a table of edge inputs, the two give the same value (of the
same type) or both refuse; and a value dl accepted reaches the job unchanged through the
toolkit's round trip (JSON hyperparameters, then ``--key str(value)``).
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from orchestrator import jobs, settings
from orchestrator.backends.local.contract import hyperparameters_json, to_cmd_args
from orchestrator.errors import ParamError
from orchestrator.jobs import TRAINER_PARAMS, Param, list_jobs
from orchestrator.runtime import dl_entry
from tests.conftest import REPO

EDGES = [
    "", " ", "3", " 3 ", "-3", "+3", "03", "1_000", "3.0", "3.", ".5", "0.5", "1", "1.0", "0", "0.0",
    "1.5", "-0.5", "1e3", "1E-3", "-1e-05", "2e-1", "0x10", "nan", "NaN", "inf", "-inf", "Infinity",
    "true", "True", " TRUE ", "yes", "on", "off", "No", "maybe", "auto", "AUTO", " auto ", "abc",
    "3 4", "--x", "-x", "32-true", "adam", "\u0661\u0662",
]  # fmt: skip

BARE = {  # one undecorated declaration per type
    "int": Param("param", "int", 3),
    "float": Param("param", "float", 0.5),
    "str": Param("param", "str", "x"),
    "bool": Param("param", "bool", False),
    "batches": Param("param", "batches", 1.0),
    "workers": Param("param", "workers", 0),
}
CONSTRAINED = [
    Param("param", "int", 3, min=1, max=10),
    Param("param", "float", 0.5, min=0.0, max=1.0),
    Param("param", "batches", 1.0, min=1),
    Param("param", "workers", 0, min=0, max=4),
    Param("param", "str", "adam", choices=("adam", "sgd")),
    Param("param", "int", 1, choices=(1, 3)),
]


def declared() -> list[Param]:
    """Every parameter of the bundled jobs and of the trainer, under the one name ``param``."""
    found = [*TRAINER_PARAMS.values()]
    for job in list_jobs(cwd=REPO):
        found += job.params.values()
    return [Param("param", q.type, q.default, q.help, q.choices, q.min, q.max) for q in found]


def at_launch(param: Param, raw: str):
    try:
        value = param.parse(raw)
    except ParamError:
        return "refused"
    return type(value).__name__, value


def in_container(param: Param, argv: list[str]):
    spec = {"name": "parity", "params": {param.name: param.to_json()}, "trainer": {}}
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage line on a refusal
            value = dl_entry.parse_hyperparameters(spec, argv)[param.name]
    except SystemExit:
        return "refused"
    return type(value).__name__, value


def toolkit_argv(value: object, name: str = "param") -> list[str]:
    """What SageMaker's toolkit (and the local backend) passes for a value dl launched with."""
    return to_cmd_args({key: json.loads(text) for key, text in hyperparameters_json({name: value}).items()})


def disagreements(param: Param) -> list[str]:
    found = []
    for raw in EDGES:
        launch, container = at_launch(param, raw), in_container(param, ["--param", raw])
        if launch != container:
            found.append(f"{raw!r}: dl {launch}, runtime {container}")
        elif launch != "refused":
            carried = in_container(param, toolkit_argv(launch[1]))
            if carried != launch:
                found.append(f"{raw!r}: dl {launch}, after the toolkit's round trip {carried}")
    return found


def test_every_declarable_type_is_pinned():
    assert set(BARE) == jobs._TYPES


@pytest.mark.parametrize("kind", sorted(BARE))
def test_both_parsers_agree_on_each_type(kind):
    assert disagreements(BARE[kind]) == []


@pytest.mark.parametrize("param", CONSTRAINED, ids=lambda p: f"{p.type}-{p.min}-{p.max}-{p.choices}")
def test_both_parsers_agree_on_ranges_and_choices(param):
    assert disagreements(param) == []


def test_both_parsers_agree_on_every_bundled_declaration():
    params = declared()
    assert {p.type for p in params} >= {"int", "float", "str", "bool", "batches", "workers"}
    assert {str(p.to_json()): disagreements(p) for p in params} == {str(p.to_json()): [] for p in params}


def test_values_that_look_like_options_reach_the_job():
    """argparse alone takes ``-1e-05`` or ``--x`` after a flag for an option, not a value."""
    assert in_container(BARE["float"], toolkit_argv(-1e-05)) == ("float", -1e-05)
    assert in_container(BARE["str"], toolkit_argv("--x")) == ("str", "--x")
    assert in_container(BARE["str"], ["--param=--x"]) == ("str", "--x")
    one_letter = Param("k", "float", 0.5)  # the toolkit gives it one dash: -k VALUE
    assert toolkit_argv(-1e-05, "k") == ["-k", "-1e-05"]
    assert in_container(one_letter, toolkit_argv(-1e-05, "k")) == ("float", -1e-05)


def test_the_runtime_reads_the_same_true_and_false_words_as_dl():
    assert dl_entry._TRUE == settings.TRUE_WORDS and dl_entry._FALSE == settings.FALSE_WORDS
    assert [settings.parse_bool(w) for w in ("YES", "off", "maybe")] == [True, False, None]
