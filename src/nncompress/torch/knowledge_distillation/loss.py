"""The distillation loss: the compressed model (student) against a frozen copy of the original
model (teacher), on the same inputs, computed during the student's training forward.

Formulas (NNCF 2.x's), for each pair of output tensors at the same place in the outputs (nested
tuples, lists, dicts) where the student's tensor is floating point and requires grad:

- ``mse``: ``scale * mean((student - teacher) ** 2)``; tensors with fewer than 2 dimensions are
  skipped (most likely a loss value the model returns).
- ``softmax``: ``scale * T**2 * mean_over_batch(-sum_c softmax(teacher / T)_c *
  log_softmax(student / T)_c)``, on ``[batch, classes]`` tensors only (others are skipped). It
  is the cross-entropy to the teacher's soft labels: KL divergence plus the teacher's entropy,
  a constant, so the gradients are those of the KL divergence, but the value is not 0 when
  student and teacher agree.

The per-pair values are summed. Under ``DataParallel`` every replica computes its own value on
its device; :meth:`KnowledgeDistillationLoss.calculate` averages them on the model's device.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nncompress.api.compression import CompressionLoss
from nncompress.errors import NNCompressError
from nncompress.torch.initialization import model_device
from nncompress.torch.nncf_network import NNCFNetwork

__all__ = [
    "KD_TYPES",
    "DistillationError",
    "DistillationHook",
    "KnowledgeDistillationLoss",
    "distillation_loss",
    "flatten_outputs",
    "freeze_teacher",
    "sync_norm_modes",
    "usable_pairs",
]

logger = logging.getLogger("nncompress")

KD_TYPES = ("mse", "softmax")
_NORMS = "_nncf_kd_norm_layers"  # names of the teacher's BatchNorm layers that follow the student


class DistillationError(NNCompressError, RuntimeError):
    """The student's and the teacher's outputs cannot be compared (structure or shapes differ)."""


def flatten_outputs(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """``(path, leaf)`` for every leaf of nested tuples, lists and mappings, in order."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten_outputs(item, (*path, key))
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from flatten_outputs(item, (*path, i))
    else:
        yield path, value


def _usable(tensor: torch.Tensor, kd_type: str) -> bool:
    return tensor.ndim == 2 if kd_type == "softmax" else tensor.ndim >= 2


def usable_pairs(
    student: Any, teacher: Any, kd_type: str, *, need_grad: bool = True
) -> list[tuple[tuple, torch.Tensor, torch.Tensor]]:
    """``(path, student tensor, teacher tensor)`` the loss compares (see the module docstring).

    ``need_grad`` False also takes student tensors without grad (the build-time check runs
    under ``no_grad``). Different shapes at one path raise :class:`DistillationError`.
    """
    teacher_leaves = dict(flatten_outputs(teacher))
    pairs = []
    for path, s in flatten_outputs(student):
        if (
            not isinstance(s, torch.Tensor)
            or not s.is_floating_point()
            or (need_grad and not s.requires_grad)
        ):
            continue
        t = teacher_leaves.get(path)
        if not isinstance(t, torch.Tensor) or not _usable(s, kd_type):
            continue
        if t.shape != s.shape:
            where = "output" + "".join(f"[{p!r}]" for p in path)
            raise DistillationError(
                f"knowledge_distillation: {where} has shape {tuple(s.shape)} in the compressed model "
                f"but {tuple(t.shape)} in the original one; they must match to be distilled"
            )
        pairs.append((path, s, t))
    return pairs


def _pair_loss(
    s: torch.Tensor, t: torch.Tensor, kd_type: str, scale: float, temperature: float
) -> torch.Tensor:
    t = t.to(device=s.device, dtype=s.dtype)
    if kd_type == "mse":
        return scale * F.mse_loss(s, t)
    soft_targets = F.softmax(t / temperature, dim=1)
    cross_entropy = -(soft_targets * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()
    return scale * temperature * temperature * cross_entropy


def distillation_loss(
    student: Any, teacher: Any, kd_type: str, scale: float = 1.0, temperature: float = 1.0
) -> torch.Tensor | None:
    """The summed loss over the comparable outputs (module docstring); None when there are none."""
    if kd_type not in KD_TYPES:
        raise ValueError(f"knowledge distillation type must be one of {KD_TYPES}, got {kd_type!r}")
    total = None
    for _, s, t in usable_pairs(student, teacher, kd_type):
        value = _pair_loss(s, t, kd_type, scale, temperature)
        total = value if total is None else total + value
    return total


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Make ``teacher`` (in place) the frozen target of distillation and return it.

    Everything is in eval mode and without grad, except that BatchNorm layers with running
    statistics follow the student's mode at each forward (:func:`sync_norm_modes`):
    a student training with batch statistics is compared with a teacher using batch statistics
    too (NNCF runs the whole teacher in train mode for this), so an unchanged student has an
    ``mse`` loss of 0. The teacher's running statistics are never updated (dropout stays off,
    so the targets are deterministic).
    """
    teacher.eval()
    teacher.requires_grad_(False)
    names = []
    for name, m in teacher.named_modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            m.track_running_stats = False  # train mode: batch statistics, no running-stat update
            names.append(name)
    teacher.__dict__[_NORMS] = names
    return teacher


def sync_norm_modes(teacher: nn.Module, student: nn.Module) -> None:
    """Give each frozen BatchNorm layer of ``teacher`` the train/eval mode of the student's layer
    of the same name (a layer the student lacks stays in eval mode)."""
    for name in teacher.__dict__.get(_NORMS, ()):
        try:
            mode = student.get_submodule(name).training
        except AttributeError:
            mode = False
        teacher.get_submodule(name).training = mode


class DistillationHook:
    """Forward hook on the compressed model: in a training forward with gradients on, run the
    teacher on the same inputs and record the loss on the :class:`KnowledgeDistillationLoss`.

    A copy of the model (``deepcopy``, pickling) gets an inert hook: copies are not driven by
    the controller and must not carry (or run) the teacher.
    """

    def __init__(self, loss: KnowledgeDistillationLoss | None):
        self.loss = loss

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.loss is None:
            return
        if not isinstance(module, NNCFNetwork):
            # the model was unwrapped (create_compressed_model failed after this hook was added,
            # or it was unwrapped in place): let go of the teacher and stay inert
            self.loss = None
            return
        self.loss.record(module, args, kwargs, output)

    def __deepcopy__(self, memo: dict) -> DistillationHook:
        return DistillationHook(None)

    def __reduce__(self) -> tuple:
        return (DistillationHook, (None,))


class KnowledgeDistillationLoss(CompressionLoss):
    """``ctrl.loss()`` of knowledge distillation: the loss of the latest training forward.

    Each training forward of the student (per device under ``DataParallel``) replaces the
    recorded value; the first forward after ``loss()`` was read starts a new step. The loss is 0
    before any training forward and after a forward in eval mode or under ``no_grad``.
    """

    def __init__(
        self,
        target_model: nn.Module,
        teacher: nn.Module,
        kd_type: str,
        scale: float = 1.0,
        temperature: float = 1.0,
    ):
        if kd_type not in KD_TYPES:
            raise ValueError(f"knowledge distillation type must be one of {KD_TYPES}, got {kd_type!r}")
        self._model = target_model
        self.kd_type = kd_type
        self.scale = float(scale)
        self.temperature = float(temperature)
        self._teachers: dict[torch.device, nn.Module] = {model_device(teacher): teacher}
        self._values: dict[torch.device, torch.Tensor] = {}
        self._read = False
        self._used = False  # a backward ran through the recorded values
        self._lock = threading.Lock()
        self._warned = False

    @property
    def teacher(self) -> nn.Module:
        """The frozen original model (on the device the model had when it was compressed)."""
        return next(iter(self._teachers.values()))

    def teacher_on(self, device: torch.device) -> nn.Module:
        """The teacher on ``device``: a frozen copy is made once per device (``DataParallel``
        replicas, or the model moved after compression)."""
        with self._lock:
            teacher = self._teachers.get(device)
            if teacher is None:
                teacher = copy.deepcopy(self.teacher).to(device)
                self._teachers[device] = teacher
            return teacher

    def clear(self) -> None:
        """Forget the recorded values (``loss()`` is 0 until the next training forward)."""
        with self._lock:
            self._values.clear()
            self._read = False
            self._used = False

    def record(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        """Called by :class:`DistillationHook` after each forward of the student."""
        if not (module.training and torch.is_grad_enabled()):
            if self._values:
                self.clear()
            return
        device = _device_of(output) or _device_of((args, kwargs)) or model_device(module)
        teacher = self.teacher_on(device)
        sync_norm_modes(teacher, module)
        with torch.no_grad():
            teacher_output = teacher(*args, **kwargs)
        value = distillation_loss(output, teacher_output, self.kd_type, self.scale, self.temperature)
        if value is None:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "knowledge_distillation: no output of the compressed model can be distilled with type "
                    "'%s' (floating-point outputs that require grad, %s); the distillation loss is 0",
                    self.kd_type,
                    "2-D [batch, classes]" if self.kd_type == "softmax" else "with 2 or more dimensions",
                )
            return
        if value.requires_grad:  # a backward through it means the value belongs to a past step
            value.register_hook(self._mark_used)
        with self._lock:
            if self._read:
                self._values.clear()
                self._read = False
            self._values[device] = value
            self._used = False

    def _mark_used(self, grad: torch.Tensor) -> torch.Tensor:
        self._used = True
        return grad

    def calculate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        device = model_device(self._model)
        with self._lock:
            self._read = True
            values = list(self._values.values())
            if self._used and values:  # read again after backward: for logging, not for a backward
                values = [_SpentLoss.apply(torch.ones((), requires_grad=True), v) for v in values]
        if not values:
            return torch.zeros([], device=device)
        if len(values) == 1:
            return values[0]
        return torch.stack([v.to(device) for v in values]).mean()


class _SpentLoss(torch.autograd.Function):
    """The value of a distillation loss that a backward already went through: readable (for
    logging), but a backward through it raises a clear error instead of torch's "backward through
    the graph a second time" (``ctrl.loss()`` was called before the step's forward pass)."""

    @staticmethod
    def forward(ctx: Any, _trigger: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        raise DistillationError(
            "knowledge_distillation: this ctrl.loss() value is from a step whose backward() already ran: "
            "ctrl.loss() was called before the model's forward pass. Call it after model(x), e.g. "
            "loss = criterion(model(x), y) + ctrl.loss()"
        )


def _device_of(value: Any) -> torch.device | None:
    for _, leaf in flatten_outputs(value):
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return None
