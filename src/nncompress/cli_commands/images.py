"""Calibration data from a folder of images, for ``nncompress quantize --data DIR``.

The images (found recursively, so class sub-folders work) are decoded with Pillow and turned
into the model input by a preprocessing spec: options on the command line, a JSON file
(``--preprocess spec.json``), or both (options win)::

    {"size": [224, 224], "resize": "crop", "layout": "NCHW", "color": "RGB",
     "scale": 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

Each image becomes ``((pixels / scale) - mean) / std`` in float32, resized to ``size`` (taken
from the model input when its height and width are static), in ``layout`` (read from the model
input when its channel axis says so). ``resize``: ``stretch`` scales to the size; ``crop``
scales so the size is 87.5 % of the image, then cuts the centre (ImageNet evaluation style:
256 -> 224). With more images than ``--subset-size``, an evenly spaced selection of the sorted
files is used, so every class folder contributes.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nncompress.cli_commands import UsageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
LAYOUTS = ("NCHW", "NHWC")
RESIZE_MODES = ("stretch", "crop")
COLORS = ("RGB", "BGR")
CROP_FRACTION = 0.875
SPEC_KEYS = ("size", "resize", "layout", "color", "scale", "mean", "std")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image file becomes a model input; ``None`` fields are read from the model input."""

    size: tuple[int, int] | None = None  # (height, width)
    resize: str = "stretch"
    layout: str | None = None
    color: str = "RGB"
    scale: float = 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> ImagePreprocessing:
        """A spec from a JSON object; ``where`` names its source in errors."""
        if not isinstance(data, Mapping):
            raise UsageError(
                f"{where}: the preprocessing spec must be a JSON object, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise UsageError(
                f"{where}: unknown preprocessing key(s) {unknown}; known keys are {list(SPEC_KEYS)}"
            )
        spec = cls()
        values = {key: _parse_value(key, data[key], f"{where}: '{key}'") for key in data}
        return replace(spec, **values)

    def merged(self, overrides: Mapping[str, Any]) -> ImagePreprocessing:
        """This spec with the fields given in ``overrides`` (``None`` values are skipped)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _numbers(value: Any, where: str) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise UsageError(f"{where}: expected a number or a list of numbers, got {value!r}")
        out.append(float(item))
    if not out:
        raise UsageError(f"{where}: expected at least one number")
    return tuple(out)


def _parse_value(key: str, value: Any, where: str) -> Any:
    if key == "size":
        sizes = _numbers(value, where)
        if len(sizes) not in (1, 2) or any(s < 1 or s != int(s) for s in sizes):
            raise UsageError(f"{where}: expected a positive integer or [height, width], got {value!r}")
        h, w = (int(sizes[0]), int(sizes[-1]))
        return (h, w)
    if key in ("resize", "layout", "color"):
        choices = {"resize": RESIZE_MODES, "layout": LAYOUTS, "color": COLORS}[key]
        text = str(value)
        normal = text.lower() if key == "resize" else text.upper()
        if not isinstance(value, str) or normal not in choices:
            raise UsageError(f"{where}: expected one of {list(choices)}, got {value!r}")
        return normal
    if key == "scale":
        numbers = _numbers(value, where)
        if isinstance(value, (list, tuple)) or numbers[0] <= 0:
            raise UsageError(f"{where}: expected a positive number, got {value!r}")
        return numbers[0]
    numbers = _numbers(value, where)  # mean, std
    if key == "std" and any(s <= 0 for s in numbers):
        raise UsageError(f"{where}: every std must be positive, got {value!r}")
    return numbers


def spec_from_args(args: argparse.Namespace) -> ImagePreprocessing | None:
    """The spec of ``--preprocess`` and the image options; ``None`` when none was given."""
    options = {
        "size": args.image_size,
        "resize": args.resize,
        "layout": args.layout,
        "color": args.color,
        "scale": args.scale,
        "mean": args.mean,
        "std": args.std,
    }
    given = {k: v for k, v in options.items() if v is not None}
    if args.preprocess is None and not given:
        return None
    spec = ImagePreprocessing()
    if args.preprocess is not None:
        path = Path(args.preprocess)
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise UsageError(f"{path}: cannot read the preprocessing spec: {e.strerror or e}") from e
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: not valid JSON: {e}") from e
        spec = ImagePreprocessing.from_mapping(data, str(path))
    flags = {"size": "--image-size", "scale": "--scale", "mean": "--mean", "std": "--std"}
    parsed = {}
    for key, value in given.items():
        if key in flags:  # comma-separated numbers from the command line
            try:
                value = [float(v) for v in str(value).split(",")]
            except ValueError:
                raise UsageError(f"{flags[key]}: expected comma-separated numbers, got '{value}'") from None
            value = value[0] if key == "scale" and len(value) == 1 else value
        parsed[key] = _parse_value(key, value, flags.get(key, f"--{key}"))
    return spec.merged(parsed)


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class _Plan:
    size: tuple[int, int]
    layout: str
    channels: int


def _plan(spec: ImagePreprocessing, shape: tuple[int | None, ...] | None, name: str) -> _Plan:
    """Size, layout and channels for the model input ``name`` of ``shape``."""
    if shape is None:
        if spec.size is None or spec.layout is None:
            raise UsageError(
                f"the shape of input '{name}' is unknown: give --image-size and --layout for the images"
            )
        return _Plan(spec.size, spec.layout, 3)
    if len(shape) != 4:
        raise UsageError(
            f"input '{name}' {list(shape)} has rank {len(shape)}; images feed inputs of rank 4 "
            "(N, C, H, W or N, H, W, C)"
        )
    dims = shape[1:]
    layout = spec.layout
    if layout is None:
        first, last = dims[0] in (1, 3), dims[-1] in (1, 3)
        if first and not last:
            layout = "NCHW"
        elif last and not first:
            layout = "NHWC"
        else:
            raise UsageError(
                f"cannot tell the layout of input '{name}' {list(shape)} (which axis holds the colour "
                "channels): give --layout NCHW or NHWC"
            )
    channels_dim, hw = (dims[0], dims[1:]) if layout == "NCHW" else (dims[-1], dims[:-1])
    channels = 3 if channels_dim is None else channels_dim
    if channels not in (1, 3):
        raise UsageError(
            f"input '{name}' {list(shape)} has {channels} channels in layout {layout}; images give 1 or 3"
        )
    size = spec.size
    if size is None:
        if any(d is None for d in hw):
            raise UsageError(f"input '{name}' {list(shape)} has a dynamic height or width: give --image-size")
        size = (int(hw[0]), int(hw[1]))
    elif all(d is not None for d in hw) and tuple(hw) != size:
        raise UsageError(f"--image-size {size[0]},{size[1]} does not fit input '{name}' {list(shape)}")
    for what, values in (("mean", spec.mean), ("std", spec.std)):
        if len(values) not in (1, channels):
            raise UsageError(
                f"{what} has {len(values)} values; input '{name}' has {channels} channel(s): give 1 or {channels}"
            )
    return _Plan(size, layout, channels)


def _load_image(path: Path, spec: ImagePreprocessing, plan: _Plan, pil: Any) -> np.ndarray:
    """One image file as a float32 model input (``pil`` is the ``PIL.Image`` module)."""
    try:
        with pil.open(path) as img:
            img = img.convert("L" if plan.channels == 1 else "RGB")
            h, w = plan.size
            if spec.resize == "crop":
                f = max(h / img.height, w / img.width) / CROP_FRACTION
                rw, rh = max(w, round(img.width * f)), max(h, round(img.height * f))
                img = img.resize((rw, rh), pil.Resampling.BILINEAR)
                left, top = (rw - w) // 2, (rh - h) // 2
                img = img.crop((left, top, left + w, top + h))
            else:
                img = img.resize((w, h), pil.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise UsageError(f"{path}: cannot read the image: {e}") from e
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if spec.color == "BGR" and plan.channels == 3:
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    x = (pixels / np.float32(spec.scale) - mean) / std
    if plan.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x[None]


def load_image_folder(
    folder: Path,
    files: list[Path],
    name: str,
    shape: tuple[int | None, ...] | None,
    spec: ImagePreprocessing,
    limit: int,
) -> tuple[int, list[np.ndarray]]:
    """Number of images in ``folder`` and the preprocessed inputs of an evenly spaced
    ``limit`` of them, for the model input ``name`` of ``shape``."""
    try:
        from PIL import Image as pil
    except ImportError:
        raise UsageError(
            f"{folder}: reading images needs Pillow (pip install pillow); or give the data as .npy/.npz"
        ) from None
    plan = _plan(spec, shape, name)
    n = len(files)
    k = min(n, limit)
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, k)}) if k < n else range(n)
    return n, [_load_image(files[i], spec, plan, pil) for i in picks]


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """The preprocessing options of ``--data DIR`` with images."""
    group = parser.add_argument_group(
        "images (when --data is a folder of images; needs Pillow)",
        "x = (pixels / SCALE - MEAN) / STD, resized to the model input size",
    )
    group.add_argument(
        "--preprocess",
        metavar="SPEC.json",
        help=f"a JSON object with any of the keys {', '.join(SPEC_KEYS)}; the options below override it",
    )
    group.add_argument(
        "--image-size",
        metavar="H,W",
        help="input height and width (one number for a square); default: from the model input",
    )
    group.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        help="stretch to the size (default), or crop: scale so the size is 87.5%% of the image and cut "
        "the centre",
    )
    group.add_argument("--layout", type=str.upper, choices=LAYOUTS, help="default: read from the model input")
    group.add_argument("--color", type=str.upper, choices=COLORS, help="channel order (default RGB)")
    group.add_argument("--scale", metavar="F", help="pixels are divided by F first (default 255)")
    group.add_argument("--mean", metavar="M[,M,M]", help="subtracted per channel after scaling (default 0)")
    group.add_argument("--std", metavar="S[,S,S]", help="divides per channel after the mean (default 1)")
