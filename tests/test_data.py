import itertools

import pytest

import nncompress
from nncompress.errors import DatasetError
from nncompress.parameters import TargetDevice


def test_dataset_applies_transform_and_selects_indices():
    ds = nncompress.Dataset([(i, -i) for i in range(10)], transform_fn=lambda item: item[0] * 2)
    assert list(ds.get_inference_data()) == [2 * i for i in range(10)]
    assert list(ds.get_inference_data([7, 1, 3])) == [2, 6, 14]
    assert ds.get_length() == 10


def test_a_generator_is_read_once_and_replayed_for_every_pass():
    drawn = []

    def items():
        for i in range(5):
            drawn.append(i)
            yield i

    ds = nncompress.Dataset(items(), transform_fn=lambda x: x * 10)
    assert drawn == []  # nothing read before a pass asks
    assert list(itertools.islice(ds.get_inference_data(), 3)) == [0, 10, 20]
    assert drawn == [0, 1, 2]
    assert list(ds.get_inference_data()) == [0, 10, 20, 30, 40]  # the same first items, then more
    assert list(ds.get_data([4, 1])) == [1, 4]
    assert drawn == [0, 1, 2, 3, 4]  # each item drawn from the generator once
    assert ds.get_length() is None


def test_a_reiterable_source_is_read_again_and_not_iterated_on_construction():
    class Loader:
        batch_size = 2

        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            return iter([1, 2])

    loader = Loader()
    ds = nncompress.Dataset(loader)
    assert loader.passes == 0
    assert list(ds.get_inference_data()) == [1, 2] and list(ds.get_inference_data()) == [1, 2]
    assert loader.passes == 2 and ds.get_batch_size() == 2


def test_dataset_rejects_non_iterables():
    with pytest.raises(DatasetError, match="not iterable"):
        nncompress.Dataset(42)
    with pytest.raises(DatasetError, match="None"):
        nncompress.Dataset(None)


def test_target_device_accepts_nncf_names():
    assert TargetDevice("VPU") is TargetDevice.NPU
    assert TargetDevice("cpu") is TargetDevice.CPU
    assert nncompress.TargetDevice.CPU_SPR.value == "CPU_SPR"
