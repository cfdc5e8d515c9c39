"""``nncf.common.compression``: the controller base class and the names of its state keys."""

from __future__ import annotations

from nncompress.api.compression import CompressionAlgorithmController as BaseCompressionAlgorithmController


class BaseControllerStateNames:
    """Keys of ``ctrl.get_compression_state()``."""

    BUILDER_STATE = BaseCompressionAlgorithmController.BUILDER_STATE
    CONTROLLER_STATE = BaseCompressionAlgorithmController.CONTROLLER_STATE


__all__ = ["BaseCompressionAlgorithmController", "BaseControllerStateNames"]
