"""Small models of the knowledge-distillation tests (a module of its own, so pickling finds
the classes by a unique module name)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DigitsNet(nn.Module):
    """A small CNN for 1 x 8 x 8 digits: conv-bn-relu x2, pool, fc (prunable, quantizable)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(torch.flatten(x, 1))


class TwoHeads(nn.Module):
    """Returns nested outputs: a dict with a tuple of two heads and an integer tensor."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(6, 12)
        self.head_a = nn.Linear(12, 5)
        self.head_b = nn.Linear(12, 3)

    def forward(self, x):
        h = torch.relu(self.body(x))
        a = self.head_a(h)
        return {"heads": (a, self.head_b(h)), "label": a.argmax(1)}
