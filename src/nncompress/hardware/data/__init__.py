"""Hardware rule and fusion pattern data files (JSON, read by ``nncompress.hardware.rules``)."""
