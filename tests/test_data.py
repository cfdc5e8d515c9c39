import pytest

import nncompress
from nncompress.errors import DatasetError
from nncompress.parameters import TargetDevice


def test_dataset_applies_transform_and_selects_indices():
    ds = nncompress.Dataset([(i, -i) for i in range(10)], transform_fn=lambda item: item[0] * 2)
    assert list(ds.get_inference_data()) == [2 * i for i in range(10)]
    assert list(ds.get_inference_data([7, 1, 3])) == [2, 6, 14]
    assert ds.get_length() == 10


def test_dataset_rejects_non_iterables():
    with pytest.raises(DatasetError, match="not iterable"):
        nncompress.Dataset(42)
    with pytest.raises(DatasetError, match="None"):
        nncompress.Dataset(None)


def test_target_device_accepts_nncf_names():
    assert TargetDevice("VPU") is TargetDevice.NPU
    assert TargetDevice("cpu") is TargetDevice.CPU
    assert nncompress.TargetDevice.CPU_SPR.value == "CPU_SPR"
