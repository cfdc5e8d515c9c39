"""Offline data for the demo and the benchmarks (nothing is downloaded).

- ``digits_tensors`` / ``digits_loaders``: scikit-learn's 8x8 digits (1797 images, 10 classes),
  a stratified train/test split, images as ``N x 1 x 8 x 8`` float tensors standardized with the
  training set's mean and standard deviation.
- ``train_digits_model`` / ``evaluate``: deterministic CPU training (seconds) and accuracy.
- ``imagenet_sample_crops``: random crops (scale, position, horizontal flip) of the photos that
  ship with scikit-learn (``load_sample_images``: china, flower; needs pillow) and scikit-image
  (``skimage.data``: astronaut, coffee, chelsea, rocket, motorcycle, ...), resized and normalized
  for EfficientNet-Lite0: RGB ``(pixel - 127) / 128``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "digits_tensors",
    "digits_loaders",
    "train_digits_model",
    "evaluate",
    "sample_images",
    "imagenet_sample_crops",
    "SAMPLE_IMAGE_NAMES",
]


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


def digits_tensors(seed: int = 0, test_size: float = 0.25):
    """``(x_train, y_train, x_test, y_test)``: float32 ``N x 1 x 8 x 8`` images, int64 labels.

    The split is stratified and fixed by ``seed``; pixels are standardized with the training
    set's scalar mean and standard deviation.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    mean, std = float(x_tr.mean()), float(x_tr.std())
    x_tr = (x_tr - mean) / std
    x_te = (x_te - mean) / std
    return (
        torch.from_numpy(x_tr).unsqueeze(1),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_te).unsqueeze(1),
        torch.from_numpy(y_te),
    )


def digits_loaders(batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders over ``digits_tensors(seed)``; the train loader shuffles with a
    generator seeded by ``seed``, the test loader keeps order."""
    x_tr, y_tr, x_te, y_te = digits_tensors(seed)
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(x_tr, y_tr), batch_size=batch_size, shuffle=True, generator=gen)
    test = DataLoader(TensorDataset(x_te, y_te), batch_size=batch_size, shuffle=False)
    return train, test


def train_digits_model(
    model: nn.Module,
    epochs: int = 15,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    train_loader: DataLoader | None = None,
    weight_decay: float = 1e-4,
    verbose: bool = False,
) -> nn.Module:
    """Train ``model`` on digits with Adam and cross-entropy, deterministically, on CPU.

    Seeds torch with ``seed`` before training (weights already built are kept as they are; build
    the model after ``torch.manual_seed`` too for identical results across runs). Returns the
    model in eval mode.
    """
    torch.manual_seed(seed)
    if train_loader is None:
        train_loader, _ = digits_loaders(batch_size, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(train_loader)))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        total, n = 0.0, 0
        for x, y in train_loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            n += len(y)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / max(n, 1):.4f}")
    return model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, loader) -> float:
    """Top-1 accuracy of ``model`` over ``(x, y)`` batches; the model is put in eval mode."""
    model.eval()
    correct, total = 0, 0
    for x, y in loader:
        pred = model(x).argmax(dim=1)
        correct += int((pred == y).sum())
        total += len(y)
    return correct / max(total, 1)


# ----------------------------------------------------------------------------------------------
# ImageNet-like photos
# ----------------------------------------------------------------------------------------------

#: Photos used by ``imagenet_sample_crops``, all shipped inside the packages (no network).
SAMPLE_IMAGE_NAMES = (
    "china",  # sklearn: a temple
    "flower",  # sklearn: a flower
    "astronaut",  # skimage
    "coffee",  # skimage: a cup of coffee
    "chelsea",  # skimage: a tabby cat
    "rocket",  # skimage
    "motorcycle",  # skimage: stereo_motorcycle, left view
    "hubble_deep_field",  # skimage
    "camera",  # skimage: a cameraman (grayscale, replicated to RGB)
    "coins",  # skimage: coins (grayscale, replicated to RGB)
)


def _load_one(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        return next(img for img, fn in zip(data.images, data.filenames) if fn.endswith(f"{name}.jpg"))
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def sample_images(names=SAMPLE_IMAGE_NAMES) -> dict[str, np.ndarray]:
    """The named photos as ``H x W x 3`` uint8 RGB arrays (grayscale replicated, alpha dropped)."""
    out = {}
    for name in names:
        img = np.asarray(_load_one(name))
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out[name] = np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)
    return out


def _to_chw_float(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float().unsqueeze(0)  # 1 x 3 x H x W, 0..255


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def center_crop(img: np.ndarray, size: int = 224, mean: float = 127.0, std: float = 128.0) -> torch.Tensor:
    """``1 x 3 x size x size``: the central square of ``img`` resized and normalized."""
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = _to_chw_float(img[top : top + side, left : left + side])
    return (_resize(x, size) - mean) / std


def imagenet_sample_crops(
    n: int,
    size: int = 224,
    seed: int = 0,
    names=SAMPLE_IMAGE_NAMES,
    scale: tuple[float, float] = (0.25, 1.0),
    mean: float = 127.0,
    std: float = 128.0,
    return_sources: bool = False,
):
    """``n x 3 x size x size`` float32 crops of the sample photos, normalized ``(x - mean) / std``.

    Crop ``i`` comes from photo ``i % len(names)``: a random square covering a random fraction
    ``scale`` of the photo's shorter side squared, at a random position, randomly flipped
    horizontally, resized (bilinear, antialiased) to ``size``. Deterministic for a given ``seed``.
    With ``return_sources`` also returns the list of photo names, one per crop.
    """
    rng = np.random.default_rng(seed)
    images = sample_images(names)
    keys = list(images)
    out = torch.empty(n, 3, size, size, dtype=torch.float32)
    sources = []
    for i in range(n):
        name = keys[i % len(keys)]
        img = images[name]
        h, w = img.shape[:2]
        short = min(h, w)
        area_frac = rng.uniform(*scale)
        side = max(8, int(round(short * np.sqrt(area_frac))))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = img[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        x = _to_chw_float(np.ascontiguousarray(crop))
        out[i] = ((_resize(x, size) - mean) / std)[0]
        sources.append(name)
    return (out, sources) if return_sources else out
