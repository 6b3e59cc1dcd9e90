"""The distributed benchmark computes what it claims to (its timings are never asserted)."""

import numpy as np

import gpugrad as gg
from benchmarks import bench_distributed as bench
from gpugrad.testing import assert_close


def test_numpy_floor_gradients_match_gpugrad():
    params, x, y = bench.mlp_init((20, 16, 12, 5))
    y = y % 5
    flat, views = bench.flat_buffer(params)
    bench.numpy_mlp_gradients(params, x[:, :20], np.eye(5, dtype=np.float32)[y], views)
    model = gg.nn.MLP([20, 16, 12, 5])
    with gg.no_grad():
        for p, src in zip(model.parameters(), params):
            p.copy_(gg.tensor(src))
    gg.nn.functional.cross_entropy(model(gg.tensor(x[:, :20])), gg.tensor(y)).backward()
    assert flat.size == model.num_parameters()
    for view, p in zip(views, model.parameters()):
        assert view.shape == p.shape and view.dtype == p.grad.dtype
        assert_close(view, p.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_rotation_gives_every_library_each_place():
    libs = ["a", "b", "c"]
    assert [bench.rotated(libs, r)[0] for r in range(3)] == libs
