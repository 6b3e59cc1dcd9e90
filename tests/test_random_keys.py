"""gg.random's functional keys: Threefry-2x32-20's published test vectors, JAX's numbers, the CUDA kernel
bit for bit against the host (built with g++, in several launch configurations), streams of split keys
that look independent, the distributions, and the API's errors."""

from __future__ import annotations

import math

import numpy as np
import optional
import pytest

import gpugrad as gg
from gpugrad import random
from gpugrad.cuda import kernels
from gpugrad.cuda.emulator import host_build
from gpugrad.ops import random as prng
from gpugrad.testing import assert_close

# Random123's known-answer vectors for threefry2x32_20: (key, counter) -> block
THREEFRY_KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key,counter,expected", THREEFRY_KAT)
def test_threefry_known_answers(key, counter, expected):
    x0, x1 = prng.threefry2x32(np.uint32(key[0]), np.uint32(key[1]), np.array([counter[0]], np.uint32),
                               np.array([counter[1]], np.uint32))
    assert (int(x0[0]), int(x1[0])) == expected


def test_keys_are_uint32_pairs_of_the_seed():
    k = random.PRNGKey(1)
    assert k.dtype == np.uint32 and k.shape == (2,) and k.tolist() == [0, 1]
    assert random.key(2**32 + 7).tolist() == [1, 7]
    assert random.key(-1).tolist() == [0xFFFFFFFF, 0xFFFFFFFF]        # 64-bit two's complement
    assert random.key(5, device="cpu").device == "cpu"


def test_the_chapter_example_runs_as_written():
    a = random.normal(random.PRNGKey(1), ())
    assert a.shape == () and a.dtype == gg.float32
    assert a.item() == pytest.approx(-1.2550546, abs=1e-7)
    assert gg.grad(lambda a: a * 2)(a).item() == 2.0


# ----------------------------------------------------------------------------- JAX's numbers


@optional.needs("jax")
def test_same_bits_splits_and_uniforms_as_jax():
    import jax

    for seed in (0, 1, 42, 2**31 - 1):
        ours, theirs = random.PRNGKey(seed), jax.random.PRNGKey(seed)
        assert_close(ours, np.asarray(theirs))
        assert_close(random.split(ours, 5), np.asarray(jax.random.split(theirs, 5)))
        assert_close(random.split(ours, (2, 3)), np.asarray(jax.random.split(theirs, (2, 3))))
        assert_close(random.fold_in(ours, 123), np.asarray(jax.random.fold_in(theirs, 123)))
        assert_close(random.bits(ours, (4, 5)), np.asarray(jax.random.bits(theirs, (4, 5))))
        assert_close(random.uniform(ours, (1000,)), np.asarray(jax.random.uniform(theirs, (1000,))),
                     rtol=0, atol=0)
        # other ranges: XLA fuses u * (max - min) + min into one FMA, gpugrad rounds twice (as on CUDA)
        assert_close(random.uniform(ours, (1000,), minval=-2.0, maxval=3.0),
                     np.asarray(jax.random.uniform(theirs, (1000,), minval=-2.0, maxval=3.0)),
                     rtol=0, atol=5e-7)
        assert_close(random.randint(ours, (50,), -7, 1000, dtype=gg.int32),
                     np.asarray(jax.random.randint(theirs, (50,), -7, 1000)))
        assert_close(random.bernoulli(ours, 0.3, (40,)), np.asarray(jax.random.bernoulli(theirs, 0.3, (40,))))
        # JAX without x64 gives int32 indices, gpugrad int64 (PyTorch's index dtype): the values agree
        assert_close(random.permutation(ours, 30),
                     np.asarray(jax.random.permutation(theirs, 30)).astype(np.int64))


# ----------------------------------------------------------------------------- the kernel, bit for bit

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
CONFIGS = [(1, 1), (3, 4), (2, 3), (4, 256)]      # (grid, block): one thread, strided grids, odd blocks


@pytest.fixture(scope="module")
def random_cu():
    if host_build.compiler() is None:
        pytest.skip("g++ is not installed: the kernels' host build needs it")
    lib, _ = host_build.build(kernels.kernel_source("random.cu"), kernels.compile_options(), name="random.cu")
    return lambda entry: host_build.HostKernel(lib, entry)


def _keys(n_keys):
    return random.split(random.PRNGKey(9), n_keys).numpy()


@pytest.mark.parametrize("grid,block", CONFIGS)
@pytest.mark.parametrize("n_keys,n", [(1, 0), (1, 1), (1, 1031), (3, 257)])
def test_kernel_equals_the_host_bit_for_bit(random_cu, grid, block, n_keys, n):
    keys = _keys(n_keys)
    cases = {
        "threefry_split_u32": (np.uint32, (n_keys, n, 2), (), lambda: prng.threefry_split.forward(
            np, keys, shape=(n,))),
        "random_bits_u32": (np.uint32, (n_keys, n), (), lambda: prng._bits32(keys, 0, n)),
        "random_bits_u64": (np.uint64, (n_keys, n), (), lambda: prng._bits64(keys, 0, n)),
        "random_uniform_f32": (np.float32, (n_keys, n), (np.float32(-1.5), np.float32(2.0)),
                               lambda: prng._uniform(prng._bits32(keys, 0, n), F32, -1.5, 2.0)),
        "random_uniform_f64": (np.float64, (n_keys, n), (np.float64(-1.5), np.float64(2.0)),
                               lambda: prng._uniform(prng._bits64(keys, 0, n), F64, -1.5, 2.0)),
        "random_normal_f32": (np.float32, (n_keys, n), (), lambda: prng.random_normal.forward(
            np, keys, shape=(n,), dtype=np.dtype(np.float32))),
        "random_normal_f64": (np.float64, (n_keys, n), (), lambda: prng.random_normal.forward(
            np, keys, shape=(n,), dtype=np.dtype(np.float64))),
    }
    for entry, (dtype, shape, scalars, host) in cases.items():
        out = np.zeros(shape, dtype=dtype)
        random_cu(entry)(grid, block, (keys, np.int64(n_keys), np.int64(n), *scalars, out))
        expected = host().reshape(shape)
        assert expected.dtype == out.dtype and expected.shape == out.shape, entry
        assert_close(out.view(np.uint8), expected.view(np.uint8), msg=entry)
    data = np.arange(n_keys, dtype=np.uint32) * 977 + 5
    out = np.zeros((n_keys, 2), dtype=np.uint32)
    random_cu("threefry_fold_in_u32")(grid, block, (keys, data, np.int64(n_keys), out))
    assert_close(out, prng.threefry_fold_in.forward(np, keys, data))


def test_the_kernel_has_no_fused_multiply_add_on_the_device():
    text = (kernels.kernels_dir() / "random.cu").read_text()
    device_math = text.split("#ifdef GG_ON_DEVICE")[1].split("#else")[0]
    assert "__dmul_rn" in device_math and "__dadd_rn" in device_math and "__fmul_rn" in device_math


@pytest.mark.cuda
def test_the_same_key_gives_the_same_numbers_on_cuda():
    reason = gg.cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device: {reason}")
    draws = {
        "split": lambda k: random.split(k, 7),
        "fold_in": lambda k: random.fold_in(k, 11),
        "bits": lambda k: random.bits(k, (33,)),
        "bits64": lambda k: random.bits(k, (33,), np.uint64),
        "uniform": lambda k: random.uniform(k, (500,), minval=-1.0, maxval=4.0),
        "uniform64": lambda k: random.uniform(k, (500,), gg.float64),
        "normal": lambda k: random.normal(k, (2, 250)),
        "normal64": lambda k: random.normal(k, (500,), gg.float64),
        "randint": lambda k: random.randint(k, (100,), -3, 17),
        "bernoulli": lambda k: random.bernoulli(k, 0.25, (100,)),
        "permutation": lambda k: random.permutation(k, 100),
        "vmapped": lambda k: gg.vmap(lambda kk: random.normal(kk, (3,)))(random.split(k, 4)),
    }
    cpu, gpu = random.PRNGKey(3), random.PRNGKey(3, device="cuda")
    for name, draw in draws.items():
        a, b = draw(cpu), draw(gpu)
        assert b.device == "cuda:0" and a.device == "cpu", name
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert_close(b.numpy().view(np.uint8), a.numpy().view(np.uint8), msg=name)
    assert random.normal(cpu, (4,), device="cuda").device == "cuda:0"


# ----------------------------------------------------------------------------- streams and distributions


def test_split_keys_give_streams_that_look_independent():
    parent = random.PRNGKey(0)
    keys = random.split(parent, 8)
    assert len({tuple(k.tolist()) for k in keys} | {tuple(parent.tolist())}) == 9
    streams = np.stack([random.uniform(k, (20_000,), gg.float64).numpy() for k in keys] +
                       [random.uniform(parent, (20_000,), gg.float64).numpy(),
                        random.uniform(random.fold_in(parent, 1000), (20_000,), gg.float64).numpy()])
    corr = np.corrcoef(streams)
    off_diagonal = corr[~np.eye(len(streams), dtype=bool)]
    assert np.abs(off_diagonal).max() < 4 / math.sqrt(20_000)         # ~5.6 standard errors
    for s in streams:                                                  # uniform: flat histogram
        counts = np.histogram(s, bins=20, range=(0, 1))[0]
        chi2 = ((counts - 1000) ** 2 / 1000).sum()
        assert chi2 < 55                                               # 19 dof: p ~ 2e-5
        assert abs(np.corrcoef(s[:-1], s[1:])[0, 1]) < 0.03            # no serial correlation


@pytest.mark.parametrize("dtype", [gg.float32, gg.float64])
def test_normal_has_the_moments_of_a_standard_normal(dtype):
    x = random.normal(random.PRNGKey(7), (200_000,), dtype).numpy().astype(np.float64)
    assert x.dtype == np.float64 and np.isfinite(x).all()
    assert abs(x.mean()) < 0.01 and abs(x.var() - 1) < 0.015
    assert abs(((x - x.mean()) ** 4).mean() / x.var() ** 2 - 3) < 0.06       # kurtosis
    assert abs((x > 1.959964).mean() - 0.025) < 0.002                         # a tail


def test_the_exact_log_and_cosine_are_accurate():
    u = np.concatenate([np.geomspace(2.0 ** -53, 1.0, 5000), np.random.default_rng(0).uniform(0, 1, 5000)])
    u = u[u > 0]
    assert_close(prng.log_unit(u), np.log(u), rtol=4e-16, atol=1e-300)
    v = np.linspace(0, 1, 10_001)[:-1]
    assert_close(prng.cos_turn(v), np.cos(2 * np.pi * v), rtol=0, atol=1e-15)


def test_uniform_randint_bernoulli_ranges_and_dtypes():
    k = random.PRNGKey(11)
    u = random.uniform(k, (3, 4), gg.float64, minval=2.0, maxval=5.0)
    assert u.shape == (3, 4) and u.dtype == gg.float64 and (u.numpy() >= 2).all() and (u.numpy() < 5).all()
    assert random.uniform(k, (5,), gg.float16).dtype == gg.float16
    r = random.randint(k, (1000,), -3, 4)
    assert r.dtype == gg.int64 and set(np.unique(r.numpy())) == set(range(-3, 4))
    assert (random.randint(k, (10,), 5, 5).numpy() == 5).all()                 # an empty range gives minval
    full = random.randint(k, (2000,), np.iinfo(np.int32).min, 2**31, dtype=gg.int32).numpy()
    assert full.min() < -2**30 and full.max() > 2**30                          # the whole int32 range
    b = random.bernoulli(k, gg.tensor([0.0, 1.0, 0.5]))
    assert b.dtype == gg.bool and b.tolist()[:2] == [False, True]
    assert abs(random.bernoulli(k, 0.3, (20_000,)).numpy().mean() - 0.3) < 0.015


def test_permutation_of_an_int_an_array_and_independently():
    k = random.PRNGKey(2)
    p = random.permutation(k, 100)
    assert sorted(p.tolist()) == list(range(100)) and p.tolist() != list(range(100))
    x = gg.arange(12.0).reshape(3, 4)
    rows = random.permutation(k, x, axis=1)
    assert sorted(rows.numpy()[0].tolist()) == [0, 1, 2, 3]
    assert (rows.numpy()[:, 0] % 4 == rows.numpy()[0, 0]).all()          # one order for every row
    each = random.permutation(k, x, axis=1, independent=True).numpy()
    assert all(sorted(r.tolist()) == x.numpy()[i].tolist() for i, r in enumerate(each))
    assert random.permutation(k, 0).shape == (0,)


def test_fold_in_is_the_split_key_of_that_index_as_in_jax():
    k = random.PRNGKey(0)
    assert_close(random.fold_in(k, 3), random.split(k, 8)[3])


def test_the_same_key_gives_the_same_numbers_and_new_keys_new_ones():
    k = random.PRNGKey(4)
    assert_close(random.normal(k, (10,)), random.normal(k, (10,)), rtol=0, atol=0)
    k1, k2 = random.split(k)
    assert not np.array_equal(random.normal(k1, (10,)).numpy(), random.normal(k2, (10,)).numpy())
    # a draw's first elements do not depend on its size (counters, not a stream)
    assert_close(random.uniform(k, (5,)), random.uniform(k, (50,))[:5], rtol=0, atol=0)


@pytest.mark.parametrize("call,error,match", [
    (lambda: random.normal(gg.tensor([1, 2]), ()), TypeError, "uint32 tensor of shape"),
    (lambda: random.normal(3, ()), TypeError, "expected a key"),
    (lambda: random.normal(random.split(random.PRNGKey(0), 2), ()), TypeError, "vmap over keys"),
    (lambda: random.uniform(random.PRNGKey(0), (2,), gg.int32), TypeError, "floating dtype"),
    (lambda: random.normal(random.PRNGKey(0), (-1,)), ValueError, "negative dimension"),
    (lambda: random.bits(random.PRNGKey(0), (2,), gg.float32), TypeError, "uint32 or uint64"),
    (lambda: random.randint(random.PRNGKey(0), (2,), 0, 10, dtype=gg.float32), TypeError, "integer dtype"),
    (lambda: random.randint(random.PRNGKey(0), (2,), 0.5, 10), TypeError, "minval must be an int"),
    (lambda: random.key(1.5), TypeError, "seed must be an int"),
    (lambda: random.key(2**64), ValueError, "64 bits"),
    (lambda: random.fold_in(random.PRNGKey(0), 1.5), TypeError, "data must be an int"),
    (lambda: random.permutation(random.PRNGKey(0), -1), ValueError, ">= 0"),
])
def test_bad_arguments_are_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_pytorch_style_functions_stay():
    gg.manual_seed(0)
    a = gg.randn(3)
    gg.manual_seed(0)
    assert_close(gg.randn(3), a, rtol=0, atol=0)
    assert random.randint(0, 10, (5,)).dtype == gg.int64          # no key: PyTorch's randint
    assert gg.randint(3, size=(4,)).shape == (4,)
    assert random.generator() is random._generator and callable(random.uniform_on)
