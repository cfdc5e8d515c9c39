"""scikit-learn's 8x8 digits and a small CNN for quantization-aware training tests (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def digits_tensors(seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``: standardized ``N x 1 x 8 x 8`` float32 images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.images.astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = float(x_tr.mean()), float(x_tr.std())
    to_t = lambda a: torch.from_numpy((a - mean) / std).unsqueeze(1)  # noqa: E731
    return to_t(x_tr), torch.from_numpy(y_tr), to_t(x_te), torch.from_numpy(y_te)


class DigitsCNN(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def loader(x, y, batch_size: int = 64, shuffle: bool = False, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)


def train(
    model, x, y, epochs: int = 1, lr: float = 1e-2, optimizer=None, ctrl=None, seed: int = 0
) -> list[float]:
    """Train in the user's own loop; with a compression controller, step its scheduler and add its loss.
    Returns the loss of every batch."""
    torch.manual_seed(seed)
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(epochs):
        if ctrl is not None:
            ctrl.scheduler.epoch_step()
        for xb, yb in loader(x, y, shuffle=True, seed=seed):
            if ctrl is not None:
                ctrl.scheduler.step()
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            if ctrl is not None:
                loss = loss + ctrl.loss()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def evaluate(model, x, y) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` in eval mode."""
    model.eval()
    out = model(x)
    return float((out.argmax(1) == y).float().mean()), float(F.cross_entropy(out, y))


def qat_config(**quantization) -> dict:
    """A digits config with a quantization section (small init sample counts)."""
    section = {
        "algorithm": "quantization",
        "initializer": {
            "range": {"num_init_samples": 256},
            "batchnorm_adaptation": {"num_bn_adaptation_samples": 256},
        },
    }
    section.update(quantization)
    return {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": section}
