"""Tests for the `image_folder` trainjob: folder layouts, backbones and their weights, freezing and
fine-tuning, and the accuracy it reaches on an image folder the tests draw.

No pre-trained weights can be downloaded here, so the weights files are torchvision networks
saved with a fixed seed: what matters is that the job loads exactly them, keeps frozen blocks
exactly as loaded, and fine-tunes only the blocks it says it does.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision

from orchestrator.runtime.dl_entry import Contract, dataloader_workers
from tests.conftest import BUCKET, REPO, invoke, launched_id, load_job_module

pytestmark = pytest.mark.train  # every test here trains or imports torch/Lightning

JOB_DIR = REPO / "trainjobs" / "image_folder"
if str(JOB_DIR) not in sys.path:
    sys.path.append(str(JOB_DIR))  # the job's modules import backbones and shapes by name, as in the container
import backbones  # noqa: E402
import shapes  # noqa: E402

data_mod = load_job_module(JOB_DIR / "data.py", "dl_test_image_folder_data")
model_mod = load_job_module(JOB_DIR / "model.py", "dl_test_image_folder_model")
ImageFolderDataModule, TransferClassifier = data_mod.ImageFolderDataModule, model_mod.TransferClassifier


@pytest.fixture(scope="module")
def three_shapes(tmp_path_factory) -> Path:
    return shapes.make_image_folder(tmp_path_factory.mktemp("shapes"), train=40, val=20, size=48, seed=0)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    """A resnet18 state dict in torchvision's format (as a hub download would be), seeded."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Point HTTPS at a closed port on 127.0.0.1: a download fails at once, wherever the tests run."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)


def _equal(a: dict, b: dict, prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, f"no keys under {prefix}"
    return all(torch.equal(a[k], b[k]) for k in keys)


# -- the shapes generator and folder layouts ----------------------------------------------------------


def test_shapes_are_the_same_for_the_same_seed(tmp_path):
    one = shapes.make_image_folder(tmp_path / "one", classes=("circle", "square"), train=3, val=1, size=32, seed=4)
    two = shapes.make_image_folder(tmp_path / "two", classes=("circle", "square"), train=3, val=1, size=32, seed=4)
    files = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert [str(f) for f in files][:2] == ["train/circle/circle_0000.png", "train/circle/circle_0001.png"]
    assert len(files) == 8
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    other = shapes.make_image_folder(tmp_path / "other", classes=("circle",), train=1, val=0, size=32, seed=5)
    assert (other / files[0]).read_bytes() != (one / files[0]).read_bytes()
    assert not (other / "val").exists()


def test_train_and_val_folders_inside_the_train_channel(three_shapes):
    data = ImageFolderDataModule(data_dirs={"train": str(three_shapes)}, image_size=32)
    assert data.classes == ["circle", "square", "triangle"]
    assert len(data.train_samples) == 120 and len(data.val_samples) == 60
    assert {p.parent.parent.name for p, _ in data.val_samples} == {"val"}
    assert data.model_kwargs() == {"classes": ["circle", "square", "triangle"]}
    x, y = data.train_dataloader().dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0


def test_class_folders_alone_hold_out_a_share_of_every_class(three_shapes):
    data = ImageFolderDataModule(data_dirs={"train": str(three_shapes / "train")}, val_fraction=0.25, seed=3)
    assert len(data.train_samples) == 90 and len(data.val_samples) == 30
    assert [sum(y == c for _, y in data.val_samples) for c in range(3)] == [10, 10, 10]
    assert not {p for p, _ in data.train_samples} & {p for p, _ in data.val_samples}
    again = ImageFolderDataModule(data_dirs={"train": str(three_shapes / "train")}, val_fraction=0.25, seed=3)
    assert again.val_samples == data.val_samples


def test_a_val_channel_is_the_validation_split(three_shapes):
    data = ImageFolderDataModule(data_dirs={"train": str(three_shapes / "train"), "val": str(three_shapes / "val")})
    assert len(data.train_samples) == 120 and len(data.val_samples) == 60


def test_hidden_folders_and_other_files_are_ignored(tmp_path):
    root = shapes.make_image_folder(tmp_path / "d", classes=("circle", "square"), train=2, val=1, size=16)
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "circle" / "notes.txt").write_text("not an image")
    hidden = root / "train" / "square" / ".cache"
    hidden.mkdir()
    (hidden / "x.png").write_bytes((root / "train" / "square" / "square_0000.png").read_bytes())
    assert {k: len(v) for k, v in data_mod.class_folders(root / "train").items()} == {"circle": 2, "square": 2}


def test_bad_folders_say_what_is_wrong(tmp_path):
    one = shapes.make_image_folder(tmp_path / "one", classes=("circle",), train=2, val=0, size=16)
    with pytest.raises(ValueError, match="1 class folder.*at least two classes"):
        ImageFolderDataModule(data_dirs={"train": str(one)})
    stray = shapes.make_image_folder(tmp_path / "stray", classes=("circle", "square"), train=2, val=1, size=16)
    shutil.copytree(stray / "val" / "circle", stray / "val" / "hexagon")
    with pytest.raises(ValueError, match="class folder.*hexagon.*lacks"):
        ImageFolderDataModule(data_dirs={"train": str(stray)})
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ImageFolderDataModule(data_dirs={"train": str(tmp_path / "missing")})


def test_an_unreadable_image_is_named(tmp_path):
    root = shapes.make_image_folder(tmp_path / "d", classes=("circle", "square"), train=2, val=1, size=16)
    broken = root / "train" / "circle" / "circle_0001.png"
    broken.write_bytes(b"\x89PNG truncated")
    data = ImageFolderDataModule(data_dirs={"train": str(root)}, image_size=16)
    dataset = data.train_dataloader().dataset
    index = [p for p, _ in dataset.samples].index(broken)
    with pytest.raises(ValueError, match=re.escape(f"{broken} is not a readable image")):
        dataset[index]


# -- backbones and weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_every_backbone_splits_into_blocks_and_a_new_head(name):
    net, blocks, head = backbones.build(name, num_classes=3)
    assert head.out_features == 3 and net.get_submodule(backbones.BACKBONES[name][1]) is head
    owned = [id(p) for module in [*blocks, head] for p in module.parameters()]
    assert len(owned) == len(set(owned)), "a parameter belongs to two blocks"
    assert set(owned) == {id(p) for p in net.parameters()}, "a parameter belongs to no block"
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_a_weights_file_loads_every_backbone_weight(resnet18_file, tmp_path):
    saved = torch.load(resnet18_file)
    net, _, _ = backbones.build("resnet18", num_classes=2)
    used = backbones.load_weights(net, "resnet18", str(resnet18_file), channel=None)
    assert (used.source, used.pretrained) == ("file", True) and str(resnet18_file) in used.detail
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("fc."))
    assert state["fc.weight"].shape == (2, 512), "ImageNet's 1000-class head is not used"

    # A checkpoint of this job's own model (keys under net.) is a weights file too.
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in saved.items()}, "epoch": 3}, checkpoint)
    other, _, _ = backbones.build("resnet18", num_classes=5)
    backbones.load_weights(other, "resnet18", "auto", channel=checkpoint)
    assert torch.equal(other.state_dict()["layer4.1.conv2.weight"], saved["layer4.1.conv2.weight"])


def test_weights_that_do_not_fit_or_do_not_load_are_named(resnet18_file, tmp_path):
    net, _, _ = backbones.build("mobilenet_v3_small", num_classes=2)
    misfit = "does not fit mobilenet_v3_small: .*missing keys.*another backbone"
    with pytest.raises(backbones.WeightsError, match=misfit):
        backbones.load_weights(net, "mobilenet_v3_small", str(resnet18_file), channel=None)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(backbones.WeightsError, match="junk.pth is not a readable torch weights file"):
        backbones.load_weights(net, "mobilenet_v3_small", str(junk), channel=None)
    with pytest.raises(backbones.WeightsError, match="no such file"):
        backbones.load_weights(net, "mobilenet_v3_small", str(tmp_path / "absent.pth"), channel=None)
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.pth").write_bytes(b"")
    (two / "b.pt").write_bytes(b"")
    with pytest.raises(backbones.WeightsError, match="holds 2 weights files"):
        backbones.load_weights(net, "mobilenet_v3_small", "auto", channel=two)


def test_hub_weights_come_from_the_hub_cache(resnet18_file, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(resnet18_file.read_bytes())  # as a past download left it
    net, _, _ = backbones.build("resnet18", num_classes=2)
    used = backbones.load_weights(net, "resnet18", "auto", channel=None)
    assert used.source == "hub"
    assert used.detail == f"ResNet18_Weights.IMAGENET1K_V1 from the hub cache {cache / 'resnet18-f37072fd.pth'}"
    assert torch.equal(net.state_dict()["conv1.weight"], torch.load(resnet18_file)["conv1.weight"])


def test_without_network_auto_trains_from_scratch_and_hub_refuses(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    net, _, _ = backbones.build("resnet18", num_classes=2)
    used = backbones.load_weights(net, "resnet18", "auto", channel=None)
    assert used.source == "none" and not used.pretrained
    assert "could not fetch ResNet18_Weights.IMAGENET1K_V1" in used.detail
    assert "training from scratch (give --data weights=FILE" in used.detail
    with pytest.raises(backbones.WeightsError, match="could not fetch .*give a weights file instead"):
        backbones.load_weights(net, "resnet18", "hub", channel=None)
    assert backbones.load_weights(net, "resnet18", "none", channel=None).source == "none"


# -- freezing and fine-tuning -----------------------------------------------------------------------------


def test_frozen_backbone_stays_as_loaded_then_only_the_last_block_fine_tunes(three_shapes, resnet18_file):
    """Epoch 1 trains the head alone; epoch 2 adds layer4; the stem and layers 1-3 (weights and
    batch-norm statistics) end exactly as the file had them."""
    saved = torch.load(resnet18_file)
    L.seed_everything(0, verbose=False)
    data = ImageFolderDataModule(data_dirs={"train": str(three_shapes)}, image_size=32, batch_size=16)
    model = TransferClassifier(
        classes=data.classes, weights=str(resnet18_file), freeze_epochs=1, finetune_blocks=1, lr=3e-3
    )
    assert [model.trainable_blocks(e) for e in (0, 1, 5)] == [0, 1, 1]
    after_first: dict = {}

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                after_first.update({k: v.clone() for k, v in pl_module.net.state_dict().items()})

    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, callbacks=[Snapshot()],
    )  # fmt: skip
    trainer.fit(model, datamodule=data)

    state = model.net.state_dict()
    assert _equal(after_first, saved, "layer4."), "layer4 is frozen in the first epoch"
    assert not _equal(after_first, {k: state[k] for k in after_first}, "fc."), "the head trains from the start"
    for prefix in ("conv1.", "bn1.", "layer1.", "layer2.", "layer3."):
        assert _equal(state, saved, prefix), f"{prefix} changed although it never unfreezes"
    assert not _equal(state, saved, "layer4."), "layer4 fine-tunes in the second epoch"


def test_from_scratch_every_block_trains_from_the_first_epoch():
    model = TransferClassifier(classes=["a", "b"], weights="none", freeze_epochs=3, finetune_blocks=1)
    assert [model.trainable_blocks(e) for e in (0, 3)] == [5, 5]
    lrs = [group["lr"] for group in model.configure_optimizers().param_groups]
    assert lrs == [1e-3, 1e-3], "from scratch the backbone learns at lr, not finetune_lr"


# -- DataLoader workers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "cpus", "gpus", "workers"),
    [("auto", 2, 0, 1), ("auto", 1, 0, 1), ("auto", 4, 1, 3), ("auto", 48, 4, 11), ("auto", 8, 8, 1), (3, 48, 4, 3)],
)
def test_auto_workers_follow_sm_num_cpus(requested, cpus, gpus, workers):
    contract = Contract({"SM_NUM_CPUS": str(cpus), "SM_NUM_GPUS": str(gpus)})
    assert dataloader_workers(requested, contract) == workers


# -- through dl -----------------------------------------------------------------------------------------------


def _log_workers(output: str) -> tuple[int, int]:
    found = re.search(r"DataLoader workers: (\d+) \(num_workers=auto, SM_NUM_CPUS=(\d+)\)", output)
    assert found, output
    return int(found.group(1)), int(found.group(2))


def test_launch_from_scratch_reaches_095_on_two_shapes(dl_home, tmp_path, no_network):
    folder = shapes.make_image_folder(tmp_path / "shapes", classes=("circle", "square"), train=40, val=20, size=48)
    result = invoke(
        "launch", "image_folder", "--local", "--follow", "--data", f"train={folder}", "--set", "weights=none",
        "--set", "image_size=32", "--set", "batch_size=16", "--set", "max_epochs=3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "weights: weights=none: every layer starts from random values" in result.stdout
    assert "80 train, 40 val images; 2 classes (circle 40, square 40)" in result.stdout
    workers, cpus = _log_workers(result.stdout)
    assert workers == max(1, cpus - 1)
    shown = json.loads(invoke("show", launched_id(result.stdout), "--json").stdout)
    assert shown["status"] == "Completed"
    assert shown["metrics"]["val_acc"] >= 0.95

    # The model it leaves is self-describing: its classes, and it predicts the validation images.
    model = TransferClassifier.load_from_checkpoint(Path(shown["model"]) / "model.ckpt", weights="none")
    assert model.hparams.classes == ["circle", "square"]
    data = ImageFolderDataModule(data_dirs={"train": str(folder)}, image_size=32)
    model.eval()
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in data.val_dataloader())
    assert right / 40 >= 0.95


def test_launch_with_a_weights_channel_freezes_then_fine_tunes(dl_home, three_shapes, resnet18_file, no_network):
    result = invoke(
        "launch", "image_folder", "--local", "--follow", "--data", f"train={three_shapes}",
        "--data", f"weights={resnet18_file}", "--set", "image_size=32", "--set", "batch_size=16",
        "--set", "freeze_epochs=1", "--set", "lr=0.003", "--set", "max_epochs=4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"weights: \S+/input/data/weights \(the weights channel\)", result.stdout), result.stdout
    assert "epoch 1: training the head only (backbone frozen)" in result.stdout
    assert "epoch 2: training the head and layer4" in result.stdout
    shown = json.loads(invoke("show", launched_id(result.stdout), "--json").stdout)
    assert shown["metrics"]["val_acc"] >= 0.85  # 0.97 measured (seed 0)
    checkpoint = torch.load(Path(shown["checkpoints"]) / "last.ckpt", weights_only=False)
    assert checkpoint["dl_weights"]["source"] == "file"
    saved = torch.load(resnet18_file)
    assert torch.equal(checkpoint["state_dict"]["net.layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])


def test_a_weights_file_for_another_backbone_fails_in_one_line(dl_home, three_shapes, resnet18_file):
    result = invoke(
        "launch", "image_folder", "--local", "--follow", "--data", f"train={three_shapes}",
        "--data", f"weights={resnet18_file}", "--set", "backbone=mobilenet_v3_small", "--set", "image_size=32",
    )  # fmt: skip
    assert result.exit_code != 0
    shown = json.loads(invoke("show", launched_id(result.stdout), "--json").stdout)
    assert shown["status"] == "Failed"
    assert "WeightsError" in shown["failure_reason"] and "does not fit mobilenet_v3_small" in shown["failure_reason"]


def test_launch_out_of_the_box_draws_shapes_and_says_it_trains_from_scratch(dl_home, no_network):
    result = invoke("launch", "image_folder", "--local", "--follow", "--set", "max_epochs=2")
    assert result.exit_code == 0, result.output
    assert "drew a shapes data set (circle, square, triangle, 64x64), image_size 224 -> 64" in result.stdout
    assert "180 train, 60 val images; 3 classes" in result.stdout
    assert "could not fetch ResNet18_Weights.IMAGENET1K_V1" in result.stdout
    assert "training from scratch" in result.stdout
    shown = json.loads(invoke("show", launched_id(result.stdout), "--json").stdout)
    assert shown["metrics"]["val_acc"] >= 0.9  # 0.95 measured after 2 epochs (seed 0), 1.0 after 3


def test_on_sagemaker_with_s3_channels(aws, moto_endpoint, tmp_path, three_shapes, resnet18_file, no_network):
    """The same package as a SageMaker job: images and weights from S3 channels. moto only records
    the job, so tests/sagemaker_double.py plays SageMaker's part (channels copied from moto's S3,
    the container contract, output.tar.gz back), as in test_sagemaker.py."""
    from tests.sagemaker_double import play_training_job

    s3 = aws.client("s3", endpoint_url=moto_endpoint)
    for path in sorted(three_shapes.rglob("*.png")):
        s3.upload_file(str(path), BUCKET, f"data/shapes/{path.relative_to(three_shapes)}")
    s3.upload_file(str(resnet18_file), BUCKET, "weights/resnet18.pth")
    result = invoke(
        "launch", "image_folder", "--gpu", "T4", "--data", f"train=s3://{BUCKET}/data/shapes/",
        "--data", f"weights=s3://{BUCKET}/weights/resnet18.pth", "--set", "image_size=32", "--set", "batch_size=16",
        "--set", "freeze_epochs=1", "--set", "lr=0.003", "--set", "max_epochs=2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["id"]

    played = play_training_job(aws, run_id, tmp_path / "container", endpoint_url=moto_endpoint)
    assert played.returncode == 0, played.output
    assert (played.base / "input/data/weights/resnet18.pth").read_bytes() == resnet18_file.read_bytes()
    assert "(the weights channel)" in played.output and "120 train, 60 val images; 3 classes" in played.output
    workers, cpus = _log_workers(played.output)
    assert workers == max(1, cpus - 1)
    assert "epoch 2: training the head and layer4" in played.output

    shown = json.loads(invoke("show", run_id, "--json").stdout)
    assert shown["status"] == "Completed" and shown["target"] == "sagemaker"
    assert 0.0 <= shown["metrics"]["val_acc"] <= 1.0
    from orchestrator import api

    assert [row["epoch"] for row in api.epoch_metrics(run_id)] == [0, 1]


# -- several GPUs ---------------------------------------------------------------------------------------------

DDP_SCRIPT = """
import json, sys
sys.path[:0] = [{job!r}, {repo!r}]
import lightning as L, torch
from data import ImageFolderDataModule
from model import TransferClassifier
from orchestrator.runtime.dl_entry import Contract, strategy

if __name__ == "__main__":
    spec = json.loads({spec!r})
    chosen = strategy(spec, Contract({{"SM_NUM_GPUS": "2"}}))  # what a 2-GPU instance gets
    L.seed_everything(0, verbose=False)
    data = ImageFolderDataModule(image_size=32, batch_size=8, data_dirs={{"train": {folder!r}}})
    model = TransferClassifier(classes=data.classes, weights={weights!r}, freeze_epochs=1, finetune_blocks=1)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=chosen, max_epochs=2, logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    print("VAL", trainer.global_rank, float(trainer.callback_metrics["val_loss"]), flush=True)
    if trainer.is_global_zero:
        saved = torch.load({weights!r})
        state = model.net.state_dict()
        print("RESULT", json.dumps({{"strategy": chosen,
            "layer1_kept": torch.equal(state["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"]),
            "layer4_tuned": not torch.equal(state["layer4.1.conv2.weight"], saved["layer4.1.conv2.weight"])}}))
"""


def test_strategy_looks_for_unused_parameters_only_when_asked_and_distributed():
    from orchestrator.jobs import load_job
    from orchestrator.runtime.dl_entry import strategy

    assert load_job(JOB_DIR).find_unused_parameters is True
    asks, plain = {"find_unused_parameters": True}, {"find_unused_parameters": False}
    assert strategy(asks, Contract({"SM_NUM_GPUS": "4"})) == "ddp_find_unused_parameters_true"
    assert strategy(asks, Contract({"SM_NUM_GPUS": "1", "SM_HOSTS": '["algo-1", "algo-2"]'})).startswith("ddp_find")
    assert strategy(asks, Contract({"SM_NUM_GPUS": "1"})) == "auto"  # one process: no DDP at all
    assert strategy(plain, Contract({"SM_NUM_GPUS": "4"})) == "auto"


def test_freezing_then_fine_tuning_works_across_two_ddp_processes(tmp_path, resnet18_file):
    """Two DDP processes on the CPU stand in for two GPUs: plain DDP refuses a step in which the
    frozen blocks get no gradient; the strategy the runtime picks for this job trains through the
    unfreezing, and the replicas agree."""
    import subprocess

    from orchestrator.jobs import load_job

    folder = shapes.make_image_folder(tmp_path / "shapes", classes=("circle", "square"), train=16, val=8, size=32)
    spec = json.dumps({"find_unused_parameters": load_job(JOB_DIR).find_unused_parameters})
    script = tmp_path / "ddp_fit.py"
    script.write_text(
        DDP_SCRIPT.format(job=str(JOB_DIR), repo=str(REPO), spec=spec, folder=str(folder), weights=str(resnet18_file))
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result == {"strategy": "ddp_find_unused_parameters_true", "layer1_kept": True, "layer4_tuned": True}
    ranks = dict(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("VAL "))
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"], "val_loss is synchronised across processes"
