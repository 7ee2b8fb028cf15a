"""A LightningCLI script, as the Lightning docs teach it: python main.py fit --model.lr 0.1."""

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Regressor(L.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 8):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        print(f"cli sees lr={self.hparams.lr} hidden={self.hparams.hidden}")
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Numbers(L.LightningDataModule):
    def __init__(self, batch_size: int = 8, size: int = 64):
        super().__init__()
        self.batch_size, self.size = batch_size, size

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.size, 4, generator=g)
        self.data = TensorDataset(x, x.sum(dim=1, keepdim=True))

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)


if __name__ == "__main__":
    LightningCLI(Regressor, Numbers)
