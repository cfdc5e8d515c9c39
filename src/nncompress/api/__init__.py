"""NNCF 2.x's public training-time API: controllers, schedulers, losses, statistics.

``nncompress.api.compression`` holds the abstract classes every compression algorithm implements
(as ``nncf.api.compression``); backend-neutral, so importing it never imports a framework.
"""
