"""``nncf.common.statistics``: the statistics container returned by ``ctrl.statistics()``."""

from __future__ import annotations

from nncompress.api.compression import NNCFStatistics

__all__ = ["NNCFStatistics"]
