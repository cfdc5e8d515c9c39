"""Schema parts shared by several algorithms: scopes, BatchNorm adaptation, LR multipliers."""

from __future__ import annotations

from typing import Any

from nncompress.config.schema.types import boolean, closed_object, integer, number

SCOPE_LIST: dict[str, Any] = {"type": ["array", "string"], "items": {"type": "string"}}


def ignored_scopes(what: str = "this algorithm") -> dict[str, Any]:
    """Node names (or '{re}'-prefixed regular expressions) that ``what`` must leave alone."""
    return {
        **SCOPE_LIST,
        "description": f"Node scopes (a name, or a regular expression prefixed with '{{re}}') that {what} "
        "skips; one string or a list of them.",
    }


def target_scopes(what: str = "this algorithm") -> dict[str, Any]:
    """Node names (or '{re}'-prefixed regular expressions) that restrict where ``what`` applies."""
    return {
        **SCOPE_LIST,
        "description": f"Node scopes (a name, or a regular expression prefixed with '{{re}}') that {what} "
        "is restricted to; one string or a list of them. When absent, every eligible node is a target.",
    }


def validate_scopes() -> dict[str, Any]:
    """Whether scopes that match nothing are an error (a typo in a scope otherwise goes unnoticed)."""
    return boolean(
        "Whether an ignored or target scope that matches no node of the model is reported as an error.",
        default=True,
    )


def scoping_properties(what: str = "this algorithm") -> dict[str, dict[str, Any]]:
    """The ``ignored_scopes`` / ``target_scopes`` / ``validate_scopes`` trio most sections accept."""
    return {
        "ignored_scopes": ignored_scopes(what),
        "target_scopes": target_scopes(what),
        "validate_scopes": validate_scopes(),
    }


def batchnorm_adaptation() -> dict[str, Any]:
    """BatchNorm statistics re-estimation run on training data before fine-tuning starts."""
    return closed_object(
        "Re-estimates BatchNorm running statistics of the compressed model on training data, which "
        "recovers much of the accuracy lost at initialization.",
        {
            "num_bn_adaptation_samples": integer(
                "Number of training samples to run through the model for BatchNorm adaptation "
                "(rounded to whole batches); 0 disables the adaptation.",
                default=2000,
                minimum=0,
            ),
        },
    )


def bn_only_initializer() -> dict[str, Any]:
    """An ``initializer`` section that holds only BatchNorm adaptation (pruning, magnitude sparsity)."""
    return closed_object(
        "Initialization run once, before training, on data registered with the config.",
        {"batchnorm_adaptation": batchnorm_adaptation()},
    )


def compression_lr_multiplier(what: str, *, per_algorithm: bool = True) -> dict[str, Any]:
    """Learning-rate multiplier for the trainable parameters ``what`` names."""
    fallback = "the top-level compression_lr_multiplier, or 1" if per_algorithm else "1"
    return number(
        f"Factor applied to the learning rate of {what}; unset means {fallback}.", exclusive_minimum=0
    )
