"""Fused CUDA kernels: find kernels/*.cu, compile them with CuPy, launch them; the fused VJPs.

A fused kernel is an optional fast path for a VJP (or an optimizer update) on CUDA: one
pass over memory where composing CuPy ops would take several. The plain rule stays the
reference, and tests/test_kernels_cpu.py holds every kernel equal to it on the CPU.

    KERNELS["tanh_backward"]        KernelSpec(file, entry names, dtypes): the registry
    get_kernel("tanh_backward", np.float32)   the RawKernel for tanh_backward_f32 on this device
    launch(kernel, n, args)         grid-stride launch over n items (nothing for n == 0)
    tanh_backward(g, out)           CuPy arrays in, CuPy array out
    fused_vjp(op.fused, g, out, *inputs, needs=..., **params)   what an op's rule would return

Only the CUDA path may use this module: CuPy is reached through backend.load_cupy() on
first use, never at import. Sources are compiled with cupy.RawModule(code=...) the first
time a kernel is asked for on a device (CuPy's on-disk cache keeps the binary), and the
module is cached per (file, device id).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import backend

_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_U32, _U64 = np.dtype(np.uint32), np.dtype(np.uint64)
_SUFFIX = {_F32: "f32", _F64: "f64", _F16: "f16", _U32: "u32", _U64: "u64"}
_FLOATS = (_F32, _F64, _F16)

BLOCK = 256            # threads per block for the grid-stride kernels
BLOCKS_PER_SM = 8      # grid-stride grids stop at this many blocks per SM (2048 resident threads)
MAX_ROW_BLOCK = 256    # GG_MAX_BLOCK in kernels/common.cuh: the widest block a row kernel takes


class KernelSpec(NamedTuple):
    """A fused kernel: its source file under kernels/, its entry points, one per dtype."""

    file: str
    entries: tuple[str, ...]
    dtypes: tuple[np.dtype, ...]

    def entry(self, dtype: Any) -> str:
        """The entry point for arrays of ``dtype``; TypeError if the kernel has none."""
        dt = np.dtype(dtype)
        for d, e in zip(self.dtypes, self.entries):
            if d == dt:
                return e
        shown = ", ".join(str(d) for d in self.dtypes)
        raise TypeError(f"{self.entries[0].rsplit('_', 1)[0]}: no kernel for dtype {dt}; it has {shown}")


def _family(file: str, *names: str, dtypes: tuple[np.dtype, ...] = _FLOATS) -> dict[str, KernelSpec]:
    return {n: KernelSpec(file, tuple(f"{n}_{_SUFFIX[d]}" for d in dtypes), dtypes) for n in names}


_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu_tanh", "gelu_erf")
_FORWARD_ACTIVATIONS = ("relu", "sigmoid", "tanh")     # bias_ACT_forward: linear_activation's

# The registry of fused kernels: name -> (file, entry points, dtypes). An op declares one
# with ``@defop(fused="tanh_backward")``; the tests check every such name is here.
KERNELS: dict[str, KernelSpec] = {
    **_family("activation_backward.cu", *(f"{a}_backward" for a in _ACTIVATIONS)),
    **_family("binary_backward.cu", "multiply_backward", "divide_backward"),
    **_family("softmax_cross_entropy.cu", "softmax_cross_entropy_forward", "softmax_cross_entropy_backward"),
    **_family("bias_activation_forward.cu", *(f"bias_{a}_forward" for a in _FORWARD_ACTIVATIONS)),
    **_family("bias_activation_backward.cu", *(f"bias_{a}_backward" for a in _ACTIVATIONS),
              "bias_grad_reduce"),
    **_family("optimizer.cu", "sgd_step", "adam_step", "adamw_step", "sgd_step_multi", "adam_step_multi",
              "adamw_step_multi"),
    # the forwards of gg.random's primitives on CUDA (gpugrad/ops/random.py), not VJPs
    **_family("random.cu", "threefry_split", "threefry_fold_in", dtypes=(_U32,)),
    **_family("random.cu", "random_bits", dtypes=(_U32, _U64)),
    **_family("random.cu", "random_uniform", "random_normal", dtypes=(_F32, _F64)),
}


def kernel_names() -> list[str]:
    """The names of all fused kernels (the keys of KERNELS), sorted."""
    return sorted(KERNELS)


def _spec(name: str) -> KernelSpec:
    try:
        return KERNELS[name]
    except KeyError:
        raise KeyError(f"no fused kernel named {name!r}; see gpugrad.cuda.kernels.kernel_names()") from None


# ----------------------------------------------------------------------------- sources and modules


def kernels_dir() -> Path:
    """The folder of the .cu sources: the installed copy (gpugrad/_kernels), else the repo's kernels/."""
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "_kernels", package.parent / "kernels")
    for d in candidates:
        if (d / "common.cuh").is_file():
            return d
    raise RuntimeError("gpugrad's CUDA kernel sources are missing (looked in "
                       + " and ".join(str(d) for d in candidates) + "); reinstall gpugrad")


def compile_options() -> tuple[str, ...]:
    """NVRTC options for every kernel file (CuPy adds -arch for the device)."""
    return (f"-I{kernels_dir()}", "--std=c++17")


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def included_headers(file: str) -> list[Path]:
    """The kernels/ headers a .cu file includes, directly or through other headers, in include order."""
    found: list[Path] = []

    def visit(text: str) -> None:
        for name in _INCLUDE.findall(text):
            header = kernels_dir() / name
            if header.is_file() and header not in found:
                found.append(header)
                visit(header.read_text(encoding="utf-8"))
    visit((kernels_dir() / file).read_text(encoding="utf-8"))
    return found


def kernel_source(file: str) -> str:
    """A .cu file's text, with a #line so compile errors name the file and its line numbers.

    The first line holds a hash of the headers it includes: CuPy's on-disk cache keys a
    binary by the source text and options only, so without it an edit to common.cuh alone
    would replay a binary built from the old header.
    """
    path = kernels_dir() / file
    digest = hashlib.sha256()
    for header in included_headers(file):
        digest.update(header.name.encode() + b"\0" + header.read_bytes() + b"\0")
    return (f"// gpugrad: included headers sha256 {digest.hexdigest()}\n"
            f'#line 1 "{path.as_posix()}"\n' + path.read_text(encoding="utf-8"))


_modules: dict[tuple[str, int], Any] = {}
_functions: dict[tuple[str, np.dtype, int], Any] = {}
_max_blocks: dict[int, int] = {}


def get_module(file: str, device_id: int | None = None) -> Any:
    """The cupy.RawModule of one kernels/*.cu file for a device (the current one by default)."""
    cp = backend.load_cupy()
    dev = cp.cuda.Device().id if device_id is None else int(device_id)
    mod = _modules.get((file, dev))
    if mod is None:
        mod = cp.RawModule(code=kernel_source(file), options=compile_options())
        _modules[(file, dev)] = mod
    return mod


def compile_all() -> dict[str, str | None]:
    """Compile every kernel file for the current device: {file: None, or the compiler's error}.

    A RawModule compiles nothing when it is made: CuPy compiles on the first get_function.
    This asks for every entry point, so each file is really compiled (or its error caught).
    """
    report: dict[str, str | None] = {}
    for file in sorted({spec.file for spec in KERNELS.values()}):
        try:
            module = get_module(file)
            for spec in KERNELS.values():
                if spec.file == file:
                    for entry in spec.entries:
                        module.get_function(entry)
            report[file] = None
        except Exception as err:  # noqa: BLE001 - a compiler failure of any kind is reported
            report[file] = f"{type(err).__name__}: {err}"
    return report


def _current_device() -> int:
    """The current CUDA device's index (0 without asking the driver where there is one GPU)."""
    return backend.load_cupy().cuda.runtime.getDevice() if backend.multi_gpu else 0


def get_kernel(name: str, dtype: Any) -> Any:
    """The RawKernel ``name_f32`` / ``_f64`` / ``_f16`` for ``dtype`` on the current device.

    Called for every launch: after the first, one dict lookup (by name, dtype and device).
    """
    dev = _current_device()
    fn = _functions.get((name, dtype, dev))
    if fn is None:
        spec = _spec(name)
        entry = spec.entry(dtype)
        cp = backend.load_cupy()
        with cp.cuda.Device(dev):                 # RawModule compiles for the current device
            fn = get_module(spec.file, dev).get_function(entry)
        _functions[(name, np.dtype(dtype), dev)] = fn
    return fn


def grid_size(n: int, block: int, max_blocks: int, per_block: int | None = None) -> int:
    """Blocks for n work items, ``per_block`` each (default: one per thread), at most ``max_blocks``."""
    if n <= 0:
        return 0
    return max(1, min(-(-n // (per_block or block)), max_blocks))


def max_blocks(device_id: int | None = None) -> int:
    """How many blocks a grid-stride launch uses at most on a device: SMs x BLOCKS_PER_SM."""
    dev = _current_device() if device_id is None else int(device_id)
    m = _max_blocks.get(dev)
    if m is None:
        sms = backend.load_cupy().cuda.runtime.getDeviceProperties(dev)["multiProcessorCount"]
        m = _max_blocks[dev] = int(sms) * BLOCKS_PER_SM
    return m


def launch(kernel: Any, n: int, args: tuple, *, block: int = BLOCK, per_block: int | None = None) -> None:
    """Launch a grid-stride kernel over n items on the current stream; nothing is launched for n == 0.

    ``per_block`` is the number of items one block handles per step (rows of a row kernel:
    1); by default one per thread.
    """
    grid = grid_size(n, block, max_blocks(), per_block)
    if grid:
        kernel((grid,), (block,), tuple(args))


class _CudaLauncher:
    """How the fused functions below reach the GPU (tests swap in a CPU emulation)."""

    def xp(self) -> Any:
        return backend.load_cupy()

    def device(self, array: Any) -> Any:
        return backend.device_scope(array)   # the array's GPU made current (a no-op with one GPU)

    def pointer(self, array: Any) -> int:
        return array.data.ptr             # the device address of a CuPy array's first element

    def kernel(self, name: str, dtype: Any) -> Any:
        return get_kernel(name, dtype)

    def max_blocks(self) -> int:
        return max_blocks()

    def launch(self, kernel: Any, n: int, args: tuple, *, block: int = BLOCK,
               per_block: int | None = None) -> None:
        launch(kernel, n, args, block=block, per_block=per_block)


_launcher: Any = _CudaLauncher()


@contextlib.contextmanager
def use_launcher(launcher: Any) -> Iterator[None]:
    """Run the fused functions through another launcher (the CPU emulation in the tests)."""
    global _launcher
    saved, _launcher = _launcher, launcher
    try:
        yield
    finally:
        _launcher = saved


# ----------------------------------------------------------------------------- helpers


def _acc(dtype: np.dtype) -> np.dtype:
    """The arithmetic type of a kernel for ``dtype``: float64 for float64, float32 otherwise."""
    return _F64 if dtype == _F64 else _F32


def _scalar(dtype: np.dtype, value: float) -> np.generic:
    return _acc(dtype).type(value)


def _same(name: str, first: str, arrays: dict[str, Any]) -> None:
    """Raise unless every array has the shape and dtype of arrays[first]."""
    ref = arrays[first]
    for k, a in arrays.items():
        if a.shape != ref.shape or a.dtype != ref.dtype:
            raise ValueError(f"{name}: {k} and {first} differ: {tuple(a.shape)} {a.dtype} vs "
                             f"{tuple(ref.shape)} {ref.dtype}")


def _contiguous(xp: Any, a: Any, dtype: Any = None) -> Any:
    """``a`` as a C-contiguous array of ``dtype`` (a itself if it is one), with a's shape.

    NOTE: xp.ascontiguousarray alone would turn a 0-d array into shape (1,), in NumPy and CuPy.
    """
    if a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
        return a
    return xp.ascontiguousarray(a, dtype=dtype).reshape(a.shape)


def _inputs(xp: Any, name: str, **arrays: Any) -> list[Any]:
    """Check equal shapes and dtypes; return C-contiguous versions (copies only where needed)."""
    _same(name, next(iter(arrays)), arrays)
    return [_contiguous(xp, a) for a in arrays.values()]


def _in_place(name: str, **arrays: Any) -> None:
    """Arrays a kernel updates in place must be C-contiguous and alike."""
    _same(name, next(iter(arrays)), arrays)
    for k, a in arrays.items():
        if not a.flags.c_contiguous:
            raise ValueError(f"{name}: {k} must be C-contiguous to be updated in place")


# ----------------------------------------------------------------------------- activations


def activation_backward(name: str, g: Any, saved: Any, alpha: float = 0.0) -> Any:
    """dx of one activation kernel (e.g. "tanh_backward") from g and the saved out or x."""
    if _spec(name).file != "activation_backward.cu":
        raise ValueError(f"activation_backward: {name!r} is not an activation kernel; one of "
                         + ", ".join(f"{a}_backward" for a in _ACTIVATIONS))
    L = _launcher
    xp = L.xp()
    with L.device(g):
        g, saved = _inputs(xp, name, g=g, saved=saved)
        dx = xp.empty_like(g)
        L.launch(L.kernel(name, g.dtype), g.size, (g, saved, dx, np.int64(g.size), _scalar(g.dtype, alpha)))
    return dx


def relu_backward(g: Any, out: Any) -> Any:
    """where(out > 0, g, 0): relu's VJP from its output."""
    return activation_backward("relu_backward", g, out)


def leaky_relu_backward(g: Any, x: Any, negative_slope: float = 0.01) -> Any:
    """where(x > 0, g, negative_slope * g): leaky_relu's VJP from its input."""
    return activation_backward("leaky_relu_backward", g, x, negative_slope)


def sigmoid_backward(g: Any, out: Any) -> Any:
    """g * out * (1 - out): sigmoid's VJP from its output."""
    return activation_backward("sigmoid_backward", g, out)


def tanh_backward(g: Any, out: Any) -> Any:
    """g * (1 - out^2): tanh's VJP from its output."""
    return activation_backward("tanh_backward", g, out)


def gelu_backward(g: Any, x: Any, approximate: str = "none") -> Any:
    """gelu's VJP from its input; approximate="tanh" for the tanh form, "none" for the erf form."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu_backward: approximate must be 'none' or 'tanh', got {approximate!r}")
    return activation_backward("gelu_tanh_backward" if approximate == "tanh" else "gelu_erf_backward", g, x)


# ----------------------------------------------------------------------------- binary


def _binary(name: str, g: Any, a: Any, b: Any, names: tuple[str, str]) -> tuple[Any, Any]:
    L = _launcher
    xp = L.xp()
    with L.device(g):
        g, a, b = _inputs(xp, name, g=g, **{names[0]: a, names[1]: b})
        ga, gb = xp.empty_like(g), xp.empty_like(g)
        L.launch(L.kernel(name, g.dtype), g.size, (g, a, b, ga, gb, np.int64(g.size)))
    return ga, gb


def multiply_backward(g: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """(g * y, g * x) in one pass: both gradients of x * y (equal shapes)."""
    return _binary("multiply_backward", g, x, y, ("x", "y"))


def divide_backward(g: Any, y: Any, out: Any) -> tuple[Any, Any]:
    """(g / y, -(g / y) * out) in one pass: both gradients of out = x / y (equal shapes)."""
    return _binary("divide_backward", g, y, out, ("y", "out"))


# ----------------------------------------------------------------------------- softmax cross-entropy

_REDUCTIONS = ("mean", "sum", "none")


def _check_ce(name: str, logits: Any, target: Any, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"{name}: expected logits (N, C) and target (N,), got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got {target.dtype}")
    if logits.shape[1] == 0 and logits.shape[0] > 0:
        raise ValueError(f"{name}: logits have 0 classes: {tuple(logits.shape)}")


def _count(xp: Any, target: Any, ignore_index: int, dtype: np.dtype) -> Any:
    """The number of rows that count (target != ignore_index), as a 0-d array on the device."""
    return xp.asarray((target != ignore_index).sum()).astype(dtype)


def _ce_operands(xp: Any, logits: Any, target: Any) -> tuple[Any, Any, int, int, np.dtype]:
    """Contiguous logits and int64 targets, the logits' (rows, cols), and the accumulation dtype."""
    logits = _contiguous(xp, logits)
    target = _contiguous(xp, target, np.int64)
    rows, cols = logits.shape
    return logits, target, rows, cols, _acc(logits.dtype)


def cross_entropy_forward(logits: Any, target: Any, *, reduction: str = "mean", ignore_index: int = -100,
                          label_smoothing: float = 0.0, flags: Any = None) -> tuple[Any, Any]:
    """(loss, lse): cross-entropy of softmax(logits) (N, C) against class indices (N,).

    One fused pass per row computes log-softmax's logsumexp and the (label-smoothed)
    NLL. loss has the logits' dtype: (N,) for reduction='none', else 0-d ('mean' divides
    by the rows whose target is not ignore_index: NaN when there are none, as PyTorch).
    lse (N,) is what the backward needs besides logits and target. A target outside [0, C)
    that is not ignore_index gives its row a NaN loss and, with ``flags`` (an int64 (4,)
    array of gpugrad.cuda.checks), is recorded there as {1, target, C, ignore_index}.
    """
    name = "softmax_cross_entropy_forward"
    _check_ce(name, logits, target, reduction)
    L = _launcher
    xp = L.xp()
    with L.device(logits):
        logits, target, rows, cols, acc = _ce_operands(xp, logits, target)
        loss_rows = xp.empty((rows,), dtype=acc)
        lse = xp.empty((rows,), dtype=acc)
        block = min(MAX_ROW_BLOCK, max(32, 1 << max(0, cols - 1).bit_length()))
        L.launch(L.kernel(name, logits.dtype), rows,
                 (logits, target, loss_rows, lse, np.int64(rows), np.int64(cols), np.int64(ignore_index),
                  _scalar(logits.dtype, label_smoothing), flags), block=block, per_block=1)
        if reduction == "none":
            loss = loss_rows
        elif reduction == "sum":
            loss = loss_rows.sum()
        else:
            loss = loss_rows.sum() / _count(xp, target, ignore_index, acc)
        loss = xp.asarray(loss).astype(logits.dtype)
    return loss, lse


def cross_entropy_backward(g: Any, logits: Any, target: Any, lse: Any, *, reduction: str = "mean",
                           ignore_index: int = -100, label_smoothing: float = 0.0) -> Any:
    """dlogits = g * (softmax(logits) - q) per counted row (q the smoothed one-hot), 0 on ignored rows.

    g is the incoming gradient of the loss: 0-d for 'mean' and 'sum', (N,) for 'none';
    lse comes from cross_entropy_forward. No host synchronisation: 'mean' divides g by
    the count on the device.
    """
    name = "softmax_cross_entropy_backward"
    _check_ce(name, logits, target, reduction)
    L = _launcher
    xp = L.xp()
    with L.device(logits):
        logits, target, rows, cols, acc = _ce_operands(xp, logits, target)
        lse = _contiguous(xp, lse, acc)
        if reduction == "none":
            if g.shape != (rows,):
                raise ValueError(f"{name}: reduction='none' needs g of shape ({rows},), got {tuple(g.shape)}")
            g_rows, stride = _contiguous(xp, g, acc), 1
        else:
            if g.size != 1:
                raise ValueError(f"{name}: reduction={reduction!r} needs a scalar g, got {tuple(g.shape)}")
            g_rows, stride = xp.asarray(g, dtype=acc).reshape(1), 0
            if reduction == "mean":
                g_rows = g_rows / _count(xp, target, ignore_index, acc)
        dlogits = xp.empty_like(logits)
        L.launch(L.kernel(name, logits.dtype), rows * cols,
                 (logits, target, lse, g_rows, dlogits, np.int64(rows), np.int64(cols), np.int64(stride),
                  np.int64(ignore_index), _scalar(logits.dtype, label_smoothing)))
    return dlogits


# ----------------------------------------------------------------------------- bias + activation


def bias_activation_forward(activation: str, z: Any, bias: Any) -> Any | None:
    """z = act(z + bias) in place, bias over the last dim, in one pass; returns z.

    activation: relu, sigmoid or tanh. Returns None, changing nothing, where the kernel does
    not apply (a dtype without a kernel, bias of another dtype or shape, a non-contiguous
    z); the caller then adds and activates with array ops.
    """
    if activation not in _FORWARD_ACTIVATIONS:
        raise ValueError(f"bias_activation_forward: unknown activation {activation!r}; "
                         f"one of {', '.join(_FORWARD_ACTIVATIONS)}")
    name = f"bias_{activation}_forward"
    dtype = np.dtype(z.dtype)
    cols = z.shape[-1] if z.ndim else 0
    if (dtype not in _spec(name).dtypes or bias.dtype != dtype or tuple(bias.shape) != (cols,)
            or not z.flags.c_contiguous):
        return None
    L = _launcher
    with L.device(z):
        bias = _contiguous(L.xp(), bias)
        L.launch(L.kernel(name, dtype), z.size, (z, bias, np.int64(z.size), np.int64(cols)))
    return z


def bias_activation_backward(activation: str, g: Any, saved: Any, bias: Any, *,
                             negative_slope: float = 0.0) -> tuple[Any, Any]:
    """(dx, db) for out = act(x + b), b over the last dim, in one pass over g plus a small reduction.

    activation: relu, sigmoid, tanh (saved = out) or leaky_relu, gelu_tanh, gelu_erf
    (saved = x, the input before the bias). db = dx summed over all leading dims.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"bias_activation_backward: unknown activation {activation!r}; "
                         f"one of {', '.join(_ACTIVATIONS)}")
    name = f"bias_{activation}_backward"
    L = _launcher
    xp = L.xp()
    if g.ndim < 1:
        raise ValueError(f"{name}: g must have at least one dimension (the bias's), got a 0-d array")
    with L.device(g):
        g, saved = _inputs(xp, name, g=g, saved=saved)
        cols = g.shape[-1]
        if bias.shape != (cols,) or bias.dtype != g.dtype:
            raise ValueError(f"{name}: bias must be ({cols},) {g.dtype}, "
                             f"got {tuple(bias.shape)} {bias.dtype}")
        bias = _contiguous(xp, bias)
        rows = g.size // cols if cols else 0
        dx = xp.empty_like(g)
        db = xp.empty_like(bias)
        if cols == 0:
            return dx, db
        # Enough (chunk, column) work items to fill the GPU; each chunk walks rows_per_chunk rows.
        chunks = max(1, min(rows, -(-L.max_blocks() * BLOCK // cols)))
        rows_per_chunk = max(1, -(-rows // chunks))
        chunks = -(-rows // rows_per_chunk)
        partial = xp.empty((chunks, cols), dtype=_acc(g.dtype))
        L.launch(L.kernel(name, g.dtype), chunks * cols,
                 (g, saved, bias, dx, partial, np.int64(rows), np.int64(cols), np.int64(rows_per_chunk),
                  _scalar(g.dtype, negative_slope)))
        L.launch(L.kernel("bias_grad_reduce", g.dtype), cols, (partial, db, np.int64(chunks), np.int64(cols)))
    return dx, db


# ----------------------------------------------------------------------------- optimizers


def sgd_step(param: Any, grad: Any, momentum_buffer: Any | None, *, lr: float, momentum: float = 0.0,
             dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
             maximize: bool = False, first_step: bool = False) -> None:
    """One SGD step in place on param (and momentum_buffer), torch.optim.SGD's formulas.

    With momentum, pass the buffer (any contents on the first step, with first_step=True:
    it is set to the gradient then, as PyTorch's clone); without, pass None.
    """
    name = "sgd_step"
    if momentum != 0 and momentum_buffer is None:
        raise ValueError(f"{name}: momentum={momentum} needs a momentum_buffer")
    buf = param if momentum == 0 or momentum_buffer is None else momentum_buffer
    L = _launcher
    xp = L.xp()
    with L.device(param):
        _in_place(name, param=param, momentum_buffer=buf)
        (grad,) = _inputs(xp, name, grad=grad)
        _same(name, "param", {"param": param, "grad": grad})
        s = _acc(param.dtype).type
        L.launch(L.kernel(name, param.dtype), param.size,
                 (param, grad, buf, np.int64(param.size), s(lr), s(momentum), s(dampening), s(weight_decay),
                  np.int32(bool(nesterov)), np.int32(bool(maximize)), np.int32(bool(first_step))))


def adam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any | None = None, *,
              step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False,
              decoupled: bool = False) -> None:
    """One Adam step (AdamW with decoupled=True) in place, torch.optim.Adam/AdamW's formulas.

    step is the 1-based count including this step; the bias corrections are computed
    here in double precision. max_exp_avg_sq is needed with amsgrad only.
    """
    name = "adamw_step" if decoupled else "adam_step"
    if step < 1:
        raise ValueError(f"{name}: step counts from 1, got {step}")
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError(f"{name}: amsgrad=True needs max_exp_avg_sq")
    vmax = max_exp_avg_sq if amsgrad else param
    L = _launcher
    xp = L.xp()
    with L.device(param):
        _in_place(name, param=param, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, max_exp_avg_sq=vmax)
        (grad,) = _inputs(xp, name, grad=grad)
        _same(name, "param", {"param": param, "grad": grad})
        step_size = lr / (1.0 - beta1 ** step)
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** step)
        s = _acc(param.dtype).type
        L.launch(L.kernel(name, param.dtype), param.size,
                 (param, grad, exp_avg, exp_avg_sq, vmax, np.int64(param.size), s(lr), s(beta1), s(beta2),
                  s(eps), s(weight_decay), s(step_size), s(bias_correction2_sqrt),
                  np.int32(bool(amsgrad)), np.int32(bool(maximize))))


MULTI_TENSORS = 32    # GG_MULTI_TENSORS in kernels/optimizer.cu: parameters per multi-tensor launch


def _tensors_struct(*fields: str) -> np.dtype:
    """The layout of a gg::*Tensors struct: an address array per field, sizes, count (all 8-byte)."""
    return np.dtype([(f, np.uint64, (MULTI_TENSORS,)) for f in fields]
                    + [("size", np.int64, (MULTI_TENSORS,)), ("count", np.int64)], align=True)


ADAM_TENSORS = _tensors_struct("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")   # gg::AdamTensors
SGD_TENSORS = _tensors_struct("param", "grad", "buf")                                      # gg::SgdTensors


def _launch_multi(name: str, layout: np.dtype, tensors: list[tuple[Any, ...]], scalars: tuple) -> None:
    """Launch the multi-tensor kernel ``name`` once per MULTI_TENSORS of ``tensors``.

    Each entry holds the arrays of one parameter in the order of ``layout``'s address fields
    (the first is the parameter, whose size counts). The addresses go to the kernel in one
    struct passed by value: CuPy passes a NumPy array of size one as its bytes, so nothing
    is copied to the device first.
    """
    L = _launcher
    fields = layout.names[:-2]                            # the address arrays (then size, count)
    with L.device(tensors[0][0]):
        kernel = L.kernel(name, tensors[0][0].dtype)
        for start in range(0, len(tensors), MULTI_TENSORS):
            chunk = tensors[start:start + MULTI_TENSORS]
            packed = np.zeros((), dtype=layout)
            for k, arrays in enumerate(chunk):
                for field, a in zip(fields, arrays):
                    packed[field][k] = L.pointer(a)
                packed["size"][k] = arrays[0].size
            packed["count"] = len(chunk)
            # enough threads for the largest tensor; the others take fewer grid-stride steps
            L.launch(kernel, max(a[0].size for a in chunk), (packed, *scalars))


def _check_multi(name: str, index: int, param: Any, dtype: np.dtype, device: Any) -> None:
    if param.dtype != dtype or (backend.multi_gpu and backend.device_of(param) != device):
        raise ValueError(f"{name}: parameter {index} is {param.dtype} on {backend.device_of(param)}, "
                         f"parameter 0 {dtype} on {device}: one dtype and one device per call")


def sgd_step_multi(tensors: list[tuple[Any, Any, Any | None]], *, lr: float, momentum: float = 0.0,
                   dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                   maximize: bool = False, first_step: bool = False) -> None:
    """sgd_step for many parameters of one dtype and device: one launch per MULTI_TENSORS of them.

    tensors: (param, grad, momentum_buffer or None) per parameter, checked as sgd_step
    checks them; first_step applies to all (a caller batches first steps apart).
    """
    name = "sgd_step_multi"
    if not tensors:
        return
    xp = _launcher.xp()
    dtype, device = np.dtype(tensors[0][0].dtype), backend.device_of(tensors[0][0])
    checked = []
    for i, (param, grad, buf) in enumerate(tensors):
        if momentum != 0 and buf is None:
            raise ValueError(f"{name}: momentum={momentum} needs a momentum_buffer (parameter {i})")
        buf = param if momentum == 0 else buf
        _check_multi(name, i, param, dtype, device)
        _in_place(name, param=param, momentum_buffer=buf)
        (grad,) = _inputs(xp, name, grad=grad)
        _same(name, "param", {"param": param, "grad": grad})
        checked.append((param, grad, buf))
    s = _acc(dtype).type
    _launch_multi(name, SGD_TENSORS, checked, (s(lr), s(momentum), s(dampening), s(weight_decay),
                                                np.int32(bool(nesterov)), np.int32(bool(maximize)),
                                                np.int32(bool(first_step))))


def adam_step_multi(tensors: list[tuple[Any, Any, Any, Any, Any | None]], *, step: int, lr: float,
                    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                    amsgrad: bool = False, maximize: bool = False, decoupled: bool = False) -> None:
    """adam_step for many parameters of one dtype, device and step count: one launch per MULTI_TENSORS.

    tensors: (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq or None) per parameter, each
    checked as adam_step checks them.
    """
    name = "adamw_step_multi" if decoupled else "adam_step_multi"
    if step < 1:
        raise ValueError(f"{name}: step counts from 1, got {step}")
    if not tensors:
        return
    xp = _launcher.xp()
    dtype, device = np.dtype(tensors[0][0].dtype), backend.device_of(tensors[0][0])
    checked = []
    for i, (param, grad, exp_avg, exp_avg_sq, vmax) in enumerate(tensors):
        if amsgrad and vmax is None:
            raise ValueError(f"{name}: amsgrad=True needs max_exp_avg_sq (parameter {i})")
        vmax = vmax if amsgrad else param
        _check_multi(name, i, param, dtype, device)
        _in_place(name, param=param, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, max_exp_avg_sq=vmax)
        (grad,) = _inputs(xp, name, grad=grad)
        _same(name, "param", {"param": param, "grad": grad})
        checked.append((param, grad, exp_avg, exp_avg_sq, vmax))
    step_size = lr / (1.0 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** step)
    s = _acc(dtype).type
    scalars = (s(lr), s(beta1), s(beta2), s(eps), s(weight_decay), s(step_size), s(bias_correction2_sqrt),
               np.int32(bool(amsgrad)), np.int32(bool(maximize)))
    _launch_multi(name, ADAM_TENSORS, checked, scalars)


def adamw_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any | None = None,
               **kwargs: Any) -> None:
    """One AdamW step in place (decoupled weight decay): adam_step(..., decoupled=True)."""
    adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, decoupled=True, **kwargs)


def sgd_update(xp: Any, param: Any, grad: Any, buf: Any, *, lr: float, momentum: float, dampening: float,
               weight_decay: float, nesterov: bool, maximize: bool, first_step: bool) -> None:
    """sgd_step with gpugrad.optim.functional.sgd_update's signature (xp is CuPy; unused)."""
    sgd_step(param, grad, buf, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
             nesterov=nesterov, maximize=maximize, first_step=first_step)


def adam_update(xp: Any, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any, *,
                step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                decoupled_weight_decay: bool, amsgrad: bool, maximize: bool) -> None:
    """adam_step with gpugrad.optim.functional.adam_update's signature (xp is CuPy; unused)."""
    adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1, beta2=beta2,
              eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
              decoupled=decoupled_weight_decay)


# What gpugrad.optim.functional.FUSED takes: name -> update with the reference's signature.
OPTIMIZER_UPDATES: dict[str, Callable[..., None]] = {"sgd": sgd_update, "adam": adam_update}
# ... and FUSED_MULTI: name -> the update of many parameters (same dtype, device and step) at once.
OPTIMIZER_MULTI_UPDATES: dict[str, Callable[..., None]] = {"sgd": sgd_step_multi, "adam": adam_step_multi}


# ----------------------------------------------------------------------------- fused VJPs for ops


def _out_rule(kernel: str) -> Callable:
    def rule(g: Any, out: Any, *inputs: Any, needs: Any = None, **params: Any) -> tuple:
        return (activation_backward(kernel, g, out),)
    return rule


def _leaky_relu_rule(g: Any, out: Any, x: Any, *, needs: Any = None, negative_slope: float = 0.01,
                     **params: Any) -> tuple:
    return (leaky_relu_backward(g, x, negative_slope),)


def _input_rule(kernel: str) -> Callable:
    def rule(g: Any, out: Any, x: Any, *, needs: Any = None, **params: Any) -> tuple:
        return (activation_backward(kernel, g, x),)
    return rule


def _multiply_rule(g: Any, out: Any, x: Any, y: Any, *, needs: Any = None) -> tuple | None:
    if needs is not None and not all(needs):
        return None                        # one gradient: the plain rule is one pass already
    return multiply_backward(g, x, y)


def _divide_rule(g: Any, out: Any, x: Any, y: Any, *, needs: Any = None) -> tuple | None:
    if needs is not None and not all(needs):
        return None
    return divide_backward(g, y, out)


def _cross_entropy_rule(g: Any, out: Any, x: Any, target: Any, *, needs: Any = None,
                        ignore_index: int, label_smoothing: float, reduction: str) -> tuple | None:
    if np.dtype(x.dtype) not in _spec("softmax_cross_entropy_backward").dtypes or x.ndim != 2:
        return None
    ce = {"reduction": reduction, "ignore_index": ignore_index, "label_smoothing": label_smoothing}
    _, lse = cross_entropy_forward(x, target, **ce)     # one more read of the logits, no extra storage
    return (cross_entropy_backward(g, x, target, lse, **ce), None)


def _linear_activation_rule(g: Any, out: Any, x: Any, weight: Any, bias: Any, *, needs: Any = None,
                            activation: str) -> tuple | None:
    """linear_activation's VJP: the activation's gradient and the bias's column sums in one pass
    (bias_ACT_backward), then the two matmuls of linear's rule."""
    dtype = np.dtype(g.dtype)
    if (g.ndim != 2 or dtype not in _spec(f"bias_{activation}_backward").dtypes
            or any(a.dtype != dtype for a in (out, x, weight, bias)) or out.shape != g.shape):
        return None                       # batch dims folded or mixed dtypes: the plain rule
    needs = (True, True, True) if needs is None else needs
    gz, gb = bias_activation_backward(activation, g, out, bias)
    xp = _launcher.xp()
    return (xp.matmul(gz, weight) if needs[0] else None,       # dL/dx = Gz W
            xp.matmul(gz.T, x) if needs[1] else None,          # dL/dW = Gzᵀ X
            gb if needs[2] else None)


# kernels whose rule checks its own operands (their shapes differ from g's by design)
_OWN_CHECKS = {"softmax_cross_entropy_backward", "linear_activation_backward"}

# kernel name (an op's ``fused=``) -> a function with the op's VJP signature, minus xp:
# rule(g, out, *inputs, needs=..., **params) -> the gradients tuple, or None to use the plain rule.
FUSED_VJPS: dict[str, Callable] = {
    "relu_backward": _out_rule("relu_backward"),
    "sigmoid_backward": _out_rule("sigmoid_backward"),
    "tanh_backward": _out_rule("tanh_backward"),
    "leaky_relu_backward": _leaky_relu_rule,
    "gelu_tanh_backward": _input_rule("gelu_tanh_backward"),
    "gelu_erf_backward": _input_rule("gelu_erf_backward"),
    "multiply_backward": _multiply_rule,
    "divide_backward": _divide_rule,
    "softmax_cross_entropy_backward": _cross_entropy_rule,
    "linear_activation_backward": _linear_activation_rule,
}

# a fused VJP that is not one kernel -> the kernels it launches (the others launch their own name)
FUSED_VJP_KERNELS: dict[str, tuple[str, ...]] = {
    "linear_activation_backward": tuple(f"bias_{a}_backward" for a in ("relu", "tanh", "sigmoid"))
    + ("bias_grad_reduce",),
}


def fused_vjp(kernel: str, g: Any, out: Any, *inputs: Any, needs: Any = None, **params: Any) -> tuple | None:
    """Run an op's fused VJP: same arguments and result as its plain rule (without xp).

    Returns None when the fused path does not apply (a dtype without a kernel, or a
    case where it saves nothing); the caller then runs the plain rule.
    """
    rule = FUSED_VJPS.get(kernel)
    if rule is None:
        raise KeyError(f"no fused VJP for kernel {kernel!r}; known: {', '.join(sorted(FUSED_VJPS))}")
    if kernel in _OWN_CHECKS:
        return rule(g, out, *inputs, needs=needs, **params)
    if np.dtype(g.dtype) not in _spec(kernel).dtypes:
        return None
    for a in (out, *inputs):     # mixed dtypes (float32 * float64) or a constant operand: plain rule
        if a is not None and (getattr(a, "dtype", None) != g.dtype or getattr(a, "shape", None) != g.shape):
            return None
    return rule(g, out, *inputs, needs=needs, **params)
