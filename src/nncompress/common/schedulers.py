"""``nncf.common.schedulers``: the step/epoch counting scheduler."""

from __future__ import annotations

from nncompress.api.compression import BaseCompressionScheduler

__all__ = ["BaseCompressionScheduler"]
