"""Checkpoint save/load time and size of a ~40M-parameter state dict: gg.save (safetensors) beside peers.

    python -m benchmarks.checkpoint_io                 # 3 rounds, ~38M float32 parameters
    python -m benchmarks.checkpoint_io --rounds 1 --params 1e6

Formats: ``gpugrad`` (gg.save / gg.load: safetensors with checksums), ``safetensors``
(safetensors.numpy.save_file / load_file, no checksums: the floor of the format), ``npz``
(numpy.savez / numpy.load, uncompressed: the zip-of-.npy layout of gpugrad 0.1's checkpoints)
and ``torch`` (torch.save / torch.load, when PyTorch is installed). Each (format, operation)
runs in its own process, in rotating order; the table gives medians. Loads read a file the
save just wrote, so they come from the page cache: this measures the formats, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

FORMATS = ("gpugrad", "safetensors", "npz", "torch")


def state_dict(params: float) -> dict[str, np.ndarray]:
    """An MLP-shaped float32 state dict of about ``params`` parameters (4096-wide by default)."""
    width = max(8, int(np.sqrt(params / 2.3)))
    sizes = [width, width, width, width // 4, 10]
    rng = np.random.default_rng(0)
    out = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        out[f"{2 * i}.weight"] = rng.standard_normal((n_out, n_in), dtype=np.float32)
        out[f"{2 * i}.bias"] = rng.standard_normal(n_out, dtype=np.float32)
    return out


def _save(fmt: str, arrays: dict[str, np.ndarray], path: str) -> None:
    if fmt == "gpugrad":
        import gpugrad as gg  # noqa: PLC0415
        gg.save({k: gg.from_numpy(v) for k, v in arrays.items()}, path)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file  # noqa: PLC0415
        save_file(arrays, path)
    elif fmt == "npz":
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        import torch  # noqa: PLC0415
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)


def _load(fmt: str, path: str) -> int:
    """Load everything into memory; returns the number of values read."""
    if fmt == "gpugrad":
        import gpugrad as gg  # noqa: PLC0415
        return sum(t.numel() for t in gg.load(path).values())
    if fmt == "safetensors":
        from safetensors.numpy import load_file  # noqa: PLC0415
        return sum(a.size for a in load_file(path).values())
    if fmt == "npz":
        with np.load(path) as archive:
            return sum(archive[k].size for k in archive.files)
    import torch  # noqa: PLC0415
    return sum(t.numel() for t in torch.load(path, weights_only=True).values())


def worker(fmt: str, op: str, path: str, params: float) -> dict[str, float]:
    """One timed operation, in this process (imports done before the clock starts)."""
    if fmt == "torch":
        import torch  # noqa: F401, PLC0415
    elif fmt in ("gpugrad", "safetensors"):
        import safetensors.numpy  # noqa: F401, PLC0415

        import gpugrad  # noqa: F401, PLC0415
    if op == "save":
        arrays = state_dict(params)
        start = time.perf_counter()
        _save(fmt, arrays, path)
        return {"seconds": time.perf_counter() - start, "bytes": os.path.getsize(path)}
    start = time.perf_counter()
    values = _load(fmt, path)
    return {"seconds": time.perf_counter() - start, "values": values}


def _run_worker(fmt: str, op: str, path: str, params: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.checkpoint_io", "--worker", fmt, op, path,
                          "--params", str(params)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(rounds: int, params: float, formats: tuple[str, ...]) -> dict[str, dict[str, float]]:
    times: dict[str, dict[str, list[float]]] = {f: {"save": [], "load": []} for f in formats}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = formats[r % len(formats):] + formats[:r % len(formats)]
            for fmt in order:
                path = os.path.join(tmp, f"ckpt.{fmt}")
                saved = _run_worker(fmt, "save", path, params)
                times[fmt]["save"].append(saved["seconds"])
                sizes[fmt] = int(saved["bytes"])
                times[fmt]["load"].append(_run_worker(fmt, "load", path, params)["seconds"])
                os.unlink(path)
    return {f: {"save_s": statistics.median(times[f]["save"]), "load_s": statistics.median(times[f]["load"]),
                "mb": sizes[f] / 1e6} for f in formats}


def format_table(results: dict[str, dict[str, float]], params: int) -> str:
    lines = [f"state dict: {params / 1e6:.1f}M float32 parameters ({4 * params / 1e6:.0f} MB of data)",
             "| format | save (s) | load (s) | file (MB) |", "|---|---|---|---|"]
    for fmt, r in results.items():
        lines.append(f"| {fmt} | {r['save_s']:.3f} | {r['load_s']:.3f} | {r['mb']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", type=float, default=38e6)
    parser.add_argument("--worker", nargs=3, metavar=("FORMAT", "OP", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.params)))
        return
    try:
        import torch  # noqa: F401, PLC0415
        formats = FORMATS
    except ImportError:
        formats = FORMATS[:-1]
    params = sum(a.size for a in state_dict(args.params).values())
    print(format_table(measure(args.rounds, args.params, formats), params))


if __name__ == "__main__":
    main()
