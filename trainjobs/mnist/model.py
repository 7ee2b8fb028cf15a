"""The classic first CNN: two conv blocks, pooling, and a linear classifier."""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class DigitCNN(L.LightningModule):
    """Classifies single-channel digit images of any size >= 8x8 (8x8 digits, 28x28 MNIST)."""

    def __init__(self, lr: float = 0.002, channels: int = 32, dropout: float = 0.25, num_classes: int = 10):
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            self._block(1, channels),
            self._block(channels, 2 * channels),
            nn.AdaptiveAvgPool2d(2),  # fixed 2x2 map whatever the input size
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * channels * 2 * 2, num_classes),
        )

    @staticmethod
    def _block(in_channels: int, out_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def _loss_acc(self, batch):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return loss, acc

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss_acc(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self._loss_acc(batch)
        self.log_dict({"val_loss": loss, "val_acc": acc}, on_epoch=True, sync_dist=True)  # one value across GPUs

    def test_step(self, batch, batch_idx):
        loss, acc = self._loss_acc(batch)
        self.log_dict({"test_loss": loss, "test_acc": acc}, on_epoch=True, sync_dist=True)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
