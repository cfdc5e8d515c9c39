"""NNCF 2.x import paths under ``nncf.common`` that training scripts use, re-exported from where
the code lives (``nncompress.api``). Backend-neutral: importing them loads no framework."""
