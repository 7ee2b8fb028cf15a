"""A multilayer perceptron for 2-D points: the network of the neural network playground."""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}


class PlaygroundMLP(L.LightningModule):
    """``hidden_layers`` layers of ``width`` neurons, then one logit; 0 hidden layers is logistic regression."""

    def __init__(
        self,
        hidden_layers: int = 2,
        width: int = 8,
        activation: str = "tanh",
        lr: float = 0.03,
        l1: float = 0.0,
        l2: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        size = 2
        for _ in range(hidden_layers):
            layers += [nn.Linear(size, width), ACTIVATIONS[activation]()]
            size = width
        layers.append(nn.Linear(size, 1))
        self.net = nn.Sequential(*layers)

    def setup(self, stage: str) -> None:
        # Tensors of a few hundred numbers: threads cost more than they save (10x slower on 2 cores).
        if self.device.type == "cpu":
            torch.set_num_threads(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # logits; class 1 where > 0

    def penalty(self) -> torch.Tensor:
        """l1 * sum|w| + l2 * sum w^2 over the weight matrices (biases are not regularised)."""
        weights = [p for name, p in self.named_parameters() if name.endswith("weight")]
        total = torch.zeros((), device=weights[0].device)
        if self.hparams.l1:
            total = total + self.hparams.l1 * sum(w.abs().sum() for w in weights)
        if self.hparams.l2:
            total = total + self.hparams.l2 * sum(w.pow(2).sum() for w in weights)
        return total

    def _loss_acc(self, batch):
        x, y = batch
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y.float())
        acc = ((logits > 0).long() == y).float().mean()
        return loss, acc

    def training_step(self, batch, batch_idx):
        loss, acc = self._loss_acc(batch)
        self.log_dict({"train_loss": loss, "train_acc": acc}, on_step=False, on_epoch=True, sync_dist=True)
        return loss + self.penalty()

    def validation_step(self, batch, batch_idx):
        loss, acc = self._loss_acc(batch)
        self.log_dict({"val_loss": loss, "val_acc": acc}, on_epoch=True, sync_dist=True)  # one value across GPUs

    def test_step(self, batch, batch_idx):
        loss, acc = self._loss_acc(batch)
        self.log_dict({"test_loss": loss, "test_acc": acc}, on_epoch=True, sync_dist=True)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return (self(x) > 0).long()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
