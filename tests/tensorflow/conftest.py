"""Shared fixtures of the TensorFlow backend tests (a digits CNN trained once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trained_digits():
    """``(model, (x_train, y_train, x_test, y_test), float accuracy)``: a digits CNN trained for 4 epochs."""
    pytest.importorskip(
        "tensorflow", reason="TensorFlow is not installed (pip install nncompress[tensorflow])"
    )
    import keras
    import numpy as np
    from tf_models import digits, digits_cnn

    data = digits()
    x_train, y_train, x_test, y_test = data
    model = digits_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=64, epochs=4, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
    return model, data, accuracy
