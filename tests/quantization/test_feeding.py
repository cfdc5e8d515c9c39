"""Calibration items run two at a time (``run_in_order``): same order, bounded, errors kept."""

from __future__ import annotations

import threading
import time

import pytest

from nncompress.errors import DatasetError
from nncompress.quantization.feeding import max_in_flight, run_in_order


def test_results_come_back_in_item_order_with_at_most_max_in_flight_started():
    started, handed_back = [], []
    lock = threading.Lock()

    def run(i, item):
        with lock:
            started.append(i)
            assert len(started) - len(handed_back) <= max_in_flight(2)
        time.sleep(0.002 * ((7 * i) % 5))  # finish out of order
        return item * 10

    def items():
        yield from range(25)

    out = []
    for i, item, result in run_in_order(items(), run, workers=2):
        handed_back.append(i)
        out.append((i, item, result))
    assert out == [(i, i, 10 * i) for i in range(25)]


def test_error_of_an_item_reaches_the_consumer_and_stops_reading():
    pulled = []

    def items():
        for i in range(100):
            pulled.append(i)
            yield i

    def run(i, item):
        if i == 5:
            raise DatasetError(f"item {i} is broken")
        return item

    seen = []
    with pytest.raises(DatasetError, match="item 5 is broken"):
        for i, _, _ in run_in_order(items(), run, workers=2):
            seen.append(i)
    assert seen == [0, 1, 2, 3, 4]
    assert len(pulled) <= 5 + max_in_flight(2)


def test_one_worker_is_a_plain_loop():
    assert [r for _, _, r in run_in_order(iter("abc"), lambda i, x: (i, x), workers=1)] == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
    ]
