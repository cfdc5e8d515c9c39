"""Backend-neutral quantization: specs, placement, statistics and PTQ algorithms (numpy only)."""
