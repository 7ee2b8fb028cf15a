"""The SageMaker training instances dl knows: specs, estimated prices, and which one a launch gets.

The data is ``orchestrator/data/instances.json``, shipped with the package and read
on first use. Prices there are hand-written *estimates* of SageMaker training
on-demand prices (not EC2 prices) as of the file's ``as_of`` date; ``dl gpus`` says
so above every table.

Choosing an instance (``choose``) is deterministic: "cheapest" always means lowest
price in the catalog's base region (us-east-1), ties broken by type name.

Standard library only, so ``dl gpus`` and ``dl --help`` stay instant.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

from orchestrator.errors import UsageError

FALLBACK_REGION = "us-east-1"
ANY_GPU = "any"  # what a bare `--gpu` becomes
_SEE_CATALOG = "Run `dl gpus` to see the catalog."


def default_region() -> str:
    """The AWS region to price in when none is given: the configured one (config.load_settings,
    the one precedence: DL_REGION > dl.toml's aws.region > AWS_REGION > AWS_DEFAULT_REGION),
    else us-east-1."""
    from orchestrator.config import load_settings

    return load_settings().region or FALLBACK_REGION


@dataclass(frozen=True)
class Instance:
    """One SageMaker training instance type. ``gpu_memory_gib`` is per GPU; ``gpu`` is None for CPU types."""

    type: str
    gpu: str | None
    gpus: int
    gpu_memory_gib: float
    vcpus: int
    memory_gib: float
    spot: bool
    prices: Mapping[str, float] = field(compare=False, repr=False)  # region → estimated USD per hour

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0

    def price(self, region: str) -> float:
        """Estimated on-demand USD per hour in ``region``; UsageError naming the known regions otherwise."""
        try:
            return self.prices[region]
        except KeyError:
            raise _unknown_region(region, self.prices) from None

    def to_json(self, region: str) -> dict:
        return {
            "type": self.type,
            "gpu": self.gpu,
            "gpus": self.gpus,
            "gpu_memory_gib": self.gpu_memory_gib,
            "vcpus": self.vcpus,
            "memory_gib": self.memory_gib,
            "spot": self.spot,
            "region": region,
            "price_per_hour": self.price(region),
        }


class Catalog:
    """The parsed instances.json. Build it with ``load()``."""

    def __init__(self, data: dict) -> None:
        self.as_of: str = data["as_of"]
        self.currency: str = data["currency"]
        self.note: str = data["note"]
        self.base_region: str = data["base_region"]
        self.default_cpu_instance: str = data["default_cpu_instance"]
        self.gpu_models: tuple[str, ...] = tuple(data["gpu_models"])
        multipliers: dict[str, float] = data["region_multipliers"]
        self.regions: tuple[str, ...] = tuple(sorted(multipliers))
        instances = []
        for raw in data["instances"]:
            prices = {region: round(raw["price"] * factor, 4) for region, factor in multipliers.items()}
            prices.update(raw.get("prices", {}))
            fields = {k: raw[k] for k in ("type", "gpu", "gpus", "gpu_memory_gib", "vcpus", "memory_gib", "spot")}
            instances.append(Instance(**fields, prices=prices))
        self.instances: tuple[Instance, ...] = tuple(instances)
        self._by_type = {inst.type: inst for inst in instances}

    def get(self, instance_type: str) -> Instance:
        """The instance named ``instance_type`` (with or without ``ml.``); UsageError with a suggestion."""
        name = instance_type.strip().lower()
        if not name.startswith("ml."):
            name = "ml." + name
        if name in self._by_type:
            return self._by_type[name]
        import difflib

        close = difflib.get_close_matches(name, list(self._by_type), n=1, cutoff=0.6)
        guess = f" Did you mean {close[0]}?" if close else ""
        raise UsageError(f"Unknown instance type '{instance_type}'.{guess}", _SEE_CATALOG)

    def price(self, instance_type: str, region: str) -> float:
        """Estimated on-demand USD per hour of one ``instance_type`` in ``region``."""
        return self.get(instance_type).price(region)

    def check_region(self, region: str) -> str:
        if region not in self.regions:
            raise _unknown_region(region, self.regions)
        return region

    def listing(self, gpu: str | None = None, region: str | None = None) -> list[Instance]:
        """Instances in table order: GPU models from small to large (CPU types last), then by price.

        ``gpu`` filters: a model (``A100``), a model and count (``A100:8``), or ``any`` for all GPU types.
        """
        region = self.check_region(region or self.base_region)
        found = list(self.instances)
        if gpu is not None:
            model, count = self._parse_gpu(gpu)
            found = [i for i in found if i.is_gpu and model in (ANY_GPU, i.gpu) and count in (None, i.gpus)]
        order = {model: n for n, model in enumerate(self.gpu_models)}
        return sorted(found, key=lambda i: (order.get(i.gpu, len(order)), i.price(region), i.type))

    def choose(self, gpu: str | None = None, instance_type: str | None = None, nodes: int = 1) -> Instance:
        """The instance a launch gets. See the module-level ``choose``."""
        if nodes < 1:
            raise UsageError(f"--nodes must be at least 1, not {nodes}.")
        if gpu and instance_type:
            raise UsageError("Give --gpu or --instance-type, not both.", "--gpu picks the cheapest type with that GPU.")
        if instance_type:
            return self.get(instance_type)
        if not gpu:
            return self.get(self.default_cpu_instance)
        model, count = self._parse_gpu(gpu)
        count = count or 1
        candidates = [i for i in self.instances if model in (ANY_GPU, i.gpu) and i.gpus == count]
        if not candidates:
            counts = sorted({i.gpus for i in self.instances if i.is_gpu and model in (ANY_GPU, i.gpu)})
            nearest = min((c for c in counts if c > count), default=counts[-1])
            shown = "" if model == ANY_GPU else f" {model}"
            raise UsageError(
                f"No instance type has {count}{shown} GPU{'s' if count > 1 else ''}"
                f" (types{shown and ' with ' + model} have {_counts_text(counts)}).",
                f"Try --gpu {model}:{nearest}. {_SEE_CATALOG}",
            )
        return min(candidates, key=lambda i: (i.price(self.base_region), i.type))

    def _parse_gpu(self, spec: str) -> tuple[str, int | None]:
        """``A10G`` → ("A10G", None); ``a100:8`` → ("A100", 8); ``any`` → ("any", None)."""
        name, sep, raw_count = spec.strip().partition(":")
        count = None
        if sep:
            try:
                count = int(raw_count)
            except ValueError:
                count = 0
            if count < 1:
                raise UsageError(f"Bad GPU '{spec}': the count after ':' must be a whole number >= 1.", "E.g. A100:8.")
        if name.lower() == ANY_GPU:
            return ANY_GPU, count
        by_upper = {model.upper(): model for model in self.gpu_models}
        if name.upper() in by_upper:
            return by_upper[name.upper()], count
        import difflib

        close = difflib.get_close_matches(name.upper(), list(by_upper), n=1, cutoff=0.5)
        guess = f" Did you mean '{by_upper[close[0]]}'?" if close else f" Known GPUs: {', '.join(self.gpu_models)}."
        raise UsageError(f"Unknown GPU '{name}'.{guess}", _SEE_CATALOG)


def _counts_text(counts: list[int]) -> str:
    return " or ".join(map(str, counts)) if len(counts) < 3 else f"{', '.join(map(str, counts[:-1]))} or {counts[-1]}"


def _unknown_region(region: str, known) -> UsageError:
    return UsageError(
        f"No price estimates for region '{region}'.",
        f"Known regions: {', '.join(sorted(known))}.",
    )


@functools.cache
def load() -> Catalog:
    """The catalog shipped with dl (read once per process)."""
    text = resources.files("orchestrator.data").joinpath("instances.json").read_text(encoding="utf-8")
    return Catalog(json.loads(text))


def choose(gpu: str | None = None, instance_type: str | None = None, nodes: int = 1) -> Instance:
    """The instance a launch runs on, per node.

    - ``instance_type`` (``ml.g5.xlarge`` or ``g5.xlarge``): exactly that type.
    - ``gpu="any"`` (a bare ``--gpu``): the cheapest type with one GPU.
    - ``gpu="A10G"`` / ``"a10g"``: the cheapest type with one A10G; ``"A100:8"``: with eight A100s.
    - neither: the default CPU type (ml.m5.xlarge).

    Both given, an unknown type or GPU, or a count no type has → UsageError with what exists.
    ``nodes`` must be >= 1; it multiplies the cost but does not change the choice.
    """
    return load().choose(gpu, instance_type, nodes)
