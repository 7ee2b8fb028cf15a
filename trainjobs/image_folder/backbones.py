"""Pre-trained backbones from torchvision, their weights, and which of their blocks train.

A backbone is a torchvision classification network whose final linear layer (the *head*)
is replaced by a new one for this data set's classes. Its other layers are grouped into
*blocks*, in order from the input: the stem, then each stage. Transfer learning freezes
every block and trains the head; fine-tuning then unfreezes the last few blocks.

Weights come from, in this order of preference (``weights=auto``):

1. a weights file: the ``weights`` data channel, or ``weights=<path>``;
2. torchvision's hub: the backbone's default ImageNet weights, downloaded once into
   ``$TORCH_HOME/hub/checkpoints`` (or found there already);
3. none: every layer starts random and trains from the first epoch.

The job always says which one it used.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
HUB_TIMEOUT_S = 30.0


def _stages(prefix: str, count: int) -> list[list[str]]:
    return [[f"{prefix}.{i}"] for i in range(count)]


# name -> (blocks, from the input; the head). Each block is a list of module names in the network.
BACKBONES: dict[str, tuple[list[list[str]], str]] = {
    **{
        name: ([["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]], "fc")
        for name in ("resnet18", "resnet34", "resnet50")
    },
    "mobilenet_v3_small": (_stages("features", 13) + [["classifier.0"]], "classifier.3"),
    "mobilenet_v3_large": (_stages("features", 17) + [["classifier.0"]], "classifier.3"),
    "efficientnet_b0": (_stages("features", 9), "classifier.1"),
    "convnext_tiny": (_stages("features", 8) + [["classifier.0"]], "classifier.2"),
}


@dataclass
class Weights:
    """Where a backbone's starting weights came from, in words, for the log and the model card."""

    source: str  # "file", "hub" or "none"
    detail: str

    @property
    def pretrained(self) -> bool:
        return self.source != "none"


class WeightsError(ValueError):
    pass


def build(name: str, num_classes: int) -> tuple[nn.Module, list[nn.Module], nn.Linear]:
    """The network with a new ``num_classes`` head, its blocks, and the head."""
    from torchvision import models

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    block_names, head_name = BACKBONES[name]
    net = models.get_model(name, weights=None)
    old = net.get_submodule(head_name)
    parent_name, _, attr = head_name.rpartition(".")
    head = nn.Linear(old.in_features, num_classes)
    setattr(net.get_submodule(parent_name) if parent_name else net, attr, head)
    blocks = [nn.ModuleList([net.get_submodule(n) for n in names]) for names in block_names]
    return net, blocks, head


def head_keys(name: str) -> set[str]:
    head = BACKBONES[name][1]
    return {f"{head}.weight", f"{head}.bias"}


def find_weights_file(folder: Path) -> Path:
    """The one weights file in a channel folder (or the file itself, where a channel is a file)."""
    if folder.is_file():
        return folder
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise WeightsError(
            f"the weights channel {folder} holds {what} weights files ({', '.join(WEIGHT_SUFFIXES)}); give exactly one"
        )
    return found[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a torchvision-style ``.pth`` file, or a Lightning checkpoint of this job."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable torch weights file ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    if loaded and all(k.startswith("net.") for k in loaded):  # a checkpoint of this job's own model
        loaded = {k.removeprefix("net."): v for k, v in loaded.items()}
    return loaded


def load_into(net: nn.Module, name: str, state: dict[str, torch.Tensor], where: str) -> None:
    """Load every backbone weight from ``state``; the file's own head (ImageNet's 1000 classes) is not used."""
    ignored = head_keys(name)
    state = {k: v for k, v in state.items() if k not in ignored}
    expected = {k: v for k, v in net.state_dict().items() if k not in ignored}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        problems = [
            f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
            if keys
        ]
        raise WeightsError(f"{where} does not fit {name}: {'; '.join(problems)}; was it saved for another backbone?")
    net.load_state_dict(state, strict=False)


def hub_state_dict(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone's default weights from torchvision's hub (cache first), and where they came from."""
    from torchvision import models

    weights = models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    how = f"the hub cache {cached}" if cached.is_file() else f"{weights.url}"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(HUB_TIMEOUT_S)  # a firewalled network should fail, not hang
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        raise WeightsError(f"could not fetch {weights} from {weights.url} ({type(exc).__name__}: {exc})") from None
    finally:
        socket.setdefaulttimeout(previous)
    return state, f"{weights} from {how}"


def load_weights(net: nn.Module, name: str, choice: str, channel: Path | None) -> Weights:
    """Put the chosen weights into ``net``. ``choice``: auto, hub, none, or a file path."""
    if choice == "none":
        return Weights("none", "weights=none: every layer starts from random values")
    if choice not in ("auto", "hub"):
        path = Path(choice).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights={choice}: no such file (expected auto, hub, none, or a weights file path)")
        load_into(net, name, read_state_dict(path), str(path))
        return Weights("file", f"{path} (weights=<path>)")
    if choice == "auto" and channel is not None:
        path = find_weights_file(channel)
        load_into(net, name, read_state_dict(path), str(path))
        return Weights("file", f"{path} (the weights channel)")
    try:
        state, detail = hub_state_dict(name)
    except WeightsError as exc:
        if choice == "hub":
            raise WeightsError(f"{exc}; give a weights file instead (--data weights=FILE)") from None
        return Weights(
            "none",
            f"no weights channel, and {exc}: training from scratch "
            "(give --data weights=FILE, or run where the hub is reachable, for a pre-trained start)",
        )
    load_into(net, name, state, detail)
    return Weights("hub", detail)
