"""Regenerate ``orchestrator/data/images.json``, the training-image table dl ships, from the
SageMaker SDK's own tables (package ``sagemaker-core``, a dev dependency: users never need it).

    python -m orchestrator.backends.sagemaker.image_table          # rewrite the table
    python -m orchestrator.backends.sagemaker.image_table --check  # exit 1 if it is out of date

The table holds what dl launches: AWS's PyTorch *training* images from ``MIN_VERSION`` on
(Lightning 2.6.6, what trainjobs pin, needs torch >= 2.1), in every region the SDK knows
for them. Per region, the registry host (account, ECR endpoint and partition domain, as the
SDK resolves them); per version, its Python versions, processors and the regions without it;
and the short aliases ("2.10" for "2.10.0"). Each region's host is what the SDK's ``image_uris.retrieve``
returns there, and ``build`` checks that the table reproduces ``retrieve`` for every version,
alias, Python and processor in it, so ``images.training_image`` needs no SDK logic of its own.

This lives in the package beside the reader it feeds (``images.py``), not in a ``scripts/``
folder the layout does not have: the test that compares the shipped table with the installed
SDK (tests/test_images.py) calls the same ``build``.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

import orchestrator.data

TABLE = Path(orchestrator.data.__file__).parent / "images.json"
MIN_VERSION = (2, 1, 0)
FRAMEWORK, SCOPE = "pytorch", "training"
_INSTANCE = {"cpu": "ml.m5.xlarge", "gpu": "ml.g5.xlarge"}


def build() -> dict:
    """The table from the installed sagemaker-core, checked against its ``retrieve`` (each call of
    which reads botocore's endpoint data again, ~0.1 s: hence one call per region and per entry)."""
    from sagemaker.core import image_uris  # ~1.3 s; only here, never at launch

    config = image_uris.config_for_framework(FRAMEWORK)[SCOPE]
    processors = config.get("processors", ["cpu", "gpu"])
    versions, newest_in, repositories = {}, {}, set()
    for version, spec in sorted(config["versions"].items(), key=lambda item: _key(item[0])):
        if _key(version) < MIN_VERSION:
            continue
        repositories.add(spec["repository"])
        versions[version] = {
            "py_versions": list(spec["py_versions"]),
            "processors": list(spec.get("processors", processors)),
            "regions": set(spec["registries"]),
        }
        newest_in.update(dict.fromkeys(spec["registries"], version))
    if len(repositories) != 1:
        raise ValueError(f"more than one repository: {sorted(repositories)}")
    registries = {}  # region -> registry host, as the SDK builds it (account, endpoint, partition domain)
    for region, version in sorted(newest_in.items()):
        spec = versions[version]
        uri = _retrieve(image_uris, region, version, spec["py_versions"][-1], spec["processors"][0])
        registries[region] = uri.split("/", 1)[0]
    for spec in versions.values():  # stored as the regions that lack the version: a short list
        spec["without"] = sorted(set(registries) - spec.pop("regions"))
    aliases = {alias: full for alias, full in config.get("version_aliases", {}).items() if full in versions}
    table = {
        "generated_from": f"sagemaker-core {metadata.version('sagemaker-core')}",
        "framework": FRAMEWORK,
        "scope": SCOPE,
        "repository": repositories.pop(),
        "registries": registries,
        "versions": versions,
        "aliases": dict(sorted(aliases.items(), key=lambda item: _key(item[0]))),
    }
    _verify(table, image_uris)
    return table


def _verify(table: dict, image_uris, region: str = "us-east-1") -> None:
    """Every version, alias, Python and processor gives (images.uri_from) the URI the SDK's
    ``retrieve`` gives, in ``region``; each region's host came from ``retrieve`` itself."""
    from orchestrator.backends.sagemaker.images import uri_from

    for name in list(table["versions"]) + list(table["aliases"]):
        spec = table["versions"][table["aliases"].get(name, name)]
        for py_version in spec["py_versions"]:
            for processor in spec["processors"]:
                want = _retrieve(image_uris, region, name, py_version, processor)
                got = uri_from(table, region, name, py_version, processor)
                if got != want:
                    raise ValueError(f"the table gives {got}, the SDK {want}")


def _retrieve(image_uris, region: str, version: str, py_version: str, processor: str) -> str:
    return image_uris.retrieve(
        framework=FRAMEWORK,
        region=region,
        version=version,
        py_version=py_version,
        instance_type=_INSTANCE[processor],
        image_scope=SCOPE,
    )


def shipped() -> dict:
    return json.loads(TABLE.read_text(encoding="utf-8"))


def same(a: dict, b: dict) -> bool:
    """Equal tables, whichever SDK release each was generated from."""
    return {k: v for k, v in a.items() if k != "generated_from"} == {
        k: v for k, v in b.items() if k != "generated_from"
    }


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the table is out of date")
    args = parser.parse_args(argv)
    table = build()
    if args.check:
        if same(table, shipped()):
            print(f"{TABLE} matches {table['generated_from']}")
            return 0
        print(f"{TABLE} is out of date for {table['generated_from']}: run without --check", file=sys.stderr)
        return 1
    TABLE.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {TABLE}: {len(table['versions'])} versions, {len(table['registries'])} regions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
