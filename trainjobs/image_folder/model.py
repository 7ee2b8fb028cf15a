"""Transfer learning: a pre-trained torchvision backbone, a new head, and staged fine-tuning.

For the first ``freeze_epochs`` epochs only the new head trains: the backbone is frozen (no
gradients, batch-norm statistics fixed), so the features it learned on ImageNet are reused
as they are. After that the last ``finetune_blocks`` blocks of the backbone train too, at the
smaller ``finetune_lr``, to adapt those features to the new images. Without pre-trained
weights there is nothing to keep, so every layer trains from the first epoch at ``lr``.
"""

from __future__ import annotations

from pathlib import Path

import backbones  # the job's own module, beside this one
import lightning as L
import torch
import torch.nn.functional as F


class TransferClassifier(L.LightningModule):
    def __init__(
        self,
        classes: list[str],
        backbone: str = "resnet18",
        weights: str = "auto",
        freeze_epochs: int = 3,
        finetune_blocks: int = 1,
        lr: float = 1e-3,
        finetune_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        data_dirs: dict[str, str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["data_dirs"])
        self.net, self._blocks, _ = backbones.build(backbone, len(classes))  # _blocks: a plain list, not registered
        channel = (data_dirs or {}).get("weights")
        self.weights = backbones.load_weights(self.net, backbone, weights, Path(channel) if channel else None)
        plan = (
            f"backbone frozen for {freeze_epochs} epoch(s), then the last {finetune_blocks} of "
            f"{len(self._blocks)} blocks fine-tune at lr {finetune_lr:g}"
            if self.weights.pretrained
            else f"no pre-trained weights: all {len(self._blocks)} blocks train from the start"
        )
        print(f"model: {backbone}, {len(classes)} classes; weights: {self.weights.detail}; {plan}", flush=True)
        self._shown = None

    @property
    def head(self) -> torch.nn.Linear:
        return self.net.get_submodule(backbones.BACKBONES[self.hparams.backbone][1])

    def trainable_blocks(self, epoch: int) -> int:
        """How many blocks, counted from the end of the backbone, train in ``epoch`` (0-based)."""
        if not self.weights.pretrained:
            return len(self._blocks)
        if epoch < self.hparams.freeze_epochs:
            return 0
        return min(self.hparams.finetune_blocks, len(self._blocks))

    def _set_trainable(self, epoch: int, training: bool) -> None:
        count = self.trainable_blocks(epoch)
        for i, block in enumerate(self._blocks):
            on = i >= len(self._blocks) - count
            block.requires_grad_(on)
            block.train(training and on)  # a frozen block keeps its batch-norm statistics

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self._set_trainable(self.current_epoch if self._trainer is not None else 0, True)
        return self

    def on_train_epoch_start(self) -> None:
        self._set_trainable(self.current_epoch, True)
        count = self.trainable_blocks(self.current_epoch)
        if count != self._shown and self.weights.pretrained:
            names = [
                name
                for names in backbones.BACKBONES[self.hparams.backbone][0][len(self._blocks) - count :]
                for name in names
            ]
            what = f"the head and {', '.join(names)}" if count else "the head only (backbone frozen)"
            print(f"epoch {self.current_epoch + 1}: training {what}", flush=True)
        self._shown = count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss_acc(self, batch):
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), (logits.argmax(dim=1) == y).float().mean()

    def training_step(self, batch, batch_idx):
        loss, acc = self._loss_acc(batch)
        self.log_dict({"train_loss": loss, "train_acc": acc}, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self._loss_acc(batch)
        self.log_dict({"val_loss": loss, "val_acc": acc}, on_epoch=True, sync_dist=True)  # one value across GPUs

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self):
        hp = self.hparams
        head = list(self.head.parameters())
        ids = {id(p) for p in head}
        body = [p for p in self.net.parameters() if id(p) not in ids]
        body_lr = hp.finetune_lr if self.weights.pretrained else hp.lr
        return torch.optim.AdamW(
            [{"params": head, "lr": hp.lr}, {"params": body, "lr": body_lr}], weight_decay=hp.weight_decay
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dl_weights"] = {"source": self.weights.source, "detail": self.weights.detail}
