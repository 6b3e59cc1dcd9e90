"""Datasets and DataLoader: batching, drop_last, shuffling, collation, random_split, errors."""

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.data as data
from gpugrad.testing import assert_close


def _dataset(n=10):
    x = gg.tensor(np.arange(n * 3, dtype=np.float32).reshape(n, 3))
    y = gg.tensor(np.arange(n, dtype=np.int64))
    return data.TensorDataset(x, y)


def test_tensor_dataset_items_and_len():
    ds = _dataset()
    assert len(ds) == 10
    x, y = ds[4]
    assert x.shape == (3,) and y.shape == () and y.item() == 4
    assert_close(x.data, [12, 13, 14], rtol=0, atol=0)
    assert ds[-1][1].item() == 9
    with pytest.raises(IndexError, match="out of range for 10"):
        ds[10]


def test_tensor_dataset_needs_matching_first_dims():
    with pytest.raises(ValueError, match=r"same size in their first dimension.*\(4, 2\), \(3,\)"):
        data.TensorDataset(gg.zeros(4, 2), gg.zeros(3))
    with pytest.raises(ValueError, match="0-d"):
        data.TensorDataset(gg.tensor(1.0))
    with pytest.raises(ValueError, match="at least one"):
        data.TensorDataset()


def test_batches_in_order_with_a_short_last_batch():
    loader = data.DataLoader(_dataset(), batch_size=4)
    assert len(loader) == 3
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    assert all(isinstance(b, tuple) and len(b) == 2 for b in batches)
    assert_close(np.concatenate([b[1].data for b in batches]), np.arange(10), rtol=0, atol=0)
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    assert not batches[0][0].requires_grad


def test_batches_do_not_alias_the_dataset():
    ds = _dataset()
    x, _ = next(iter(data.DataLoader(ds, batch_size=4)))
    x.data[...] = -1
    assert ds.tensors[0].data.min() == 0


def test_drop_last():
    loader = data.DataLoader(_dataset(), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [b[1].shape for b in loader] == [(4,), (4,)]
    assert len(data.DataLoader(_dataset(8), batch_size=4, drop_last=True)) == 2
    assert len(data.DataLoader(_dataset(3), batch_size=4, drop_last=True)) == 0
    assert list(data.DataLoader(_dataset(3), batch_size=4, drop_last=True)) == []


def _epoch(loader):
    return np.concatenate([y.data for _, y in loader])


def test_shuffle_sees_every_sample_once_and_reshuffles_each_epoch():
    loader = data.DataLoader(_dataset(50), batch_size=8, shuffle=True, seed=3)
    epochs = [_epoch(loader) for _ in range(3)]
    for e in epochs:
        assert_close(np.sort(e), np.arange(50), rtol=0, atol=0)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(50))
    for x, y in loader:                              # rows stay paired after shuffling
        assert_close(x.data[:, 0], (3 * y.data).astype(np.float32), rtol=0, atol=0)


def test_shuffle_is_reproducible():
    a = data.DataLoader(_dataset(50), batch_size=8, shuffle=True, seed=3)
    b = data.DataLoader(_dataset(50), batch_size=8, shuffle=True, seed=3)
    c = data.DataLoader(_dataset(50), batch_size=8, shuffle=True, seed=4)
    assert [_epoch(a).tolist() for _ in range(2)] == [_epoch(b).tolist() for _ in range(2)]
    assert _epoch(c).tolist() != _epoch(data.DataLoader(_dataset(50), shuffle=True, seed=3)).tolist()


def test_shuffle_without_seed_follows_manual_seed():
    def run():
        gg.manual_seed(7)
        loader = data.DataLoader(_dataset(40), batch_size=5, shuffle=True)
        return [_epoch(loader).tolist() for _ in range(2)]

    first, second = run(), run()
    assert first == second and first[0] != first[1]


def test_shuffle_with_drop_last_drops_a_different_tail():
    loader = data.DataLoader(_dataset(10), batch_size=4, shuffle=True, drop_last=True, seed=0)
    seen = [set(_epoch(loader).tolist()) for _ in range(5)]
    assert all(len(s) == 8 for s in seen) and len(set.union(*seen)) == 10


class Squares(data.Dataset):
    """A plain map-style dataset (no __getitems__): samples are collated one by one."""

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return {"x": gg.tensor([float(i), float(i * i)]), "label": i, "w": 0.5}


def test_generic_dataset_is_collated_by_structure():
    batches = list(data.DataLoader(Squares(), batch_size=3))
    assert len(batches) == 3
    b = batches[0]
    assert set(b) == {"x", "label", "w"}
    assert b["x"].shape == (3, 2) and b["label"].dtype == np.int64 and b["w"].dtype == np.float32
    assert_close(b["x"].data[:, 1], [0, 1, 4], rtol=0, atol=0)
    assert batches[-1]["x"].shape == (1, 2)


def test_random_split_and_subsets():
    parts = data.random_split(_dataset(10), [7, 3], seed=0)
    assert [len(p) for p in parts] == [7, 3]
    ids = sorted(int(y) for p in parts for _, y in (p[i] for i in range(len(p))))
    assert ids == list(range(10))
    x, y = next(iter(data.DataLoader(parts[0], batch_size=7)))
    assert_close(x.data[:, 0], (3 * y.data).astype(np.float32), rtol=0, atol=0)
    assert [len(p) for p in data.random_split(_dataset(10), [0.5, 0.3, 0.2], seed=0)] == [5, 3, 2]
    again = data.random_split(_dataset(10), [7, 3], seed=0)
    assert_close(again[1].indices, parts[1].indices, rtol=0, atol=0)
    with pytest.raises(ValueError, match="summing to the dataset's size 10"):
        data.random_split(_dataset(10), [5, 4])


def test_device_cpu_and_loader_errors():
    (x, y), *_ = data.DataLoader(_dataset(), batch_size=4, device="cpu")
    assert x.device == "cpu"
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.DataLoader(_dataset(), batch_size=0)
    with pytest.raises(ValueError, match="unknown device"):
        data.DataLoader(_dataset(), device="tpu")
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        data.DataLoader(object())


@pytest.mark.cuda
def test_batches_move_to_cuda():
    try:
        gg.zeros(1).to("cuda")
    except RuntimeError:
        pytest.skip("no CUDA device")
    loader = data.DataLoader(_dataset(), batch_size=4, shuffle=True, seed=0, device="cuda")
    x, y = next(iter(loader))
    assert x.device.type == "cuda" and y.device.type == "cuda"
    cuda_ds = data.TensorDataset(*(t.to("cuda") for t in _dataset().tensors))
    x, y = next(iter(data.DataLoader(cuda_ds, batch_size=4, shuffle=True, seed=0)))
    assert x.device.type == "cuda"
    assert_close(x.numpy()[:, 0], (3 * y.numpy()).astype(np.float32), rtol=0, atol=0)
