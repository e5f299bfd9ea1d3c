"""Scan operators on a CUDA GPU: the Triton backend checked and timed against the CPU path.

For each operator (selective_scan, ssd_scan, diag_scan, cross_scan) and shape:

1. Correctness on the GPU: the Triton backend (fp32 on CUDA) against the reference backend run in
   float64 on the same inputs; relative RMS error ``rms(ref - triton) / rms(ref)`` of the output
   and, worst over inputs, of the gradients of a fixed random loss. Every option is on (z gate,
   delta bias + softplus, initial state, grouped B/C; ssd: D, z, dt bias, h0). NaN fails.
2. Speed: median time (``triton.testing.do_bench``, CUDA events) of the forward (no grad) and of
   forward + backward for the Triton backend, the reference backend on the GPU (plain PyTorch) and
   a peer on the GPU (mambapy's pscan; the SSD paper's listing for ssd_scan), against the fast CPU
   backend (``backend="cpu"``) on the same machine's CPU cores, timed on the host clock.
   GB/s = minimal fp32 traffic of the forward (inputs read once, output written once) over the
   forward time; ``% copy`` compares it with a same-run device-to-device copy.

    ssmkit bench scan_gpu [--quick] [--cpu-threads N] [--out benchmarks/results/scan_gpu.md]

Needs a CUDA GPU with triton installed (mambapy optional: its rows say so when it is missing).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ssmkit.core.files import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "scan_gpu.md"
Call = Callable[[], object]


# --------------------------------------------------------------------------- helpers


def rel_rms(ref: torch.Tensor, got: torch.Tensor) -> float:
    ref64, got64 = ref.detach().double().cpu(), got.detach().double().cpu()
    if torch.isnan(got64).any():
        return float("nan")
    base = ref64.pow(2).mean().sqrt().clamp_min(1e-30)
    return float((ref64 - got64).pow(2).mean().sqrt() / base)


def gpu_ms(fn: Call) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def cpu_ms(fn: Call, repeats: int = 5) -> float:
    """Median host-clock ms of ``repeats`` calls after a warm-up (the CPU benchmark's timer)."""
    return _load_cpu_benchmark().median_time(fn, repeats).seconds * 1e3


def copy_gbs() -> float:
    src = torch.rand(1 << 28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / (gpu_ms(lambda: dst.copy_(src)) * 1e-3) / 1e9


def leaves(tensors: dict[str, torch.Tensor], device: str, dtype=None, grad=True) -> dict:
    out = {}
    for k, v in tensors.items():
        t = v.detach().to(device)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t.requires_grad_(grad and t.is_floating_point())
    return out


def loss_and_grads(fn: Callable[[dict], tuple], x: dict, seed: int = 1):
    """Outputs of ``fn(x)`` and the gradients of <outputs, fixed random weights> w.r.t. x."""
    outs = fn(x)
    g = torch.Generator().manual_seed(seed)
    loss = sum(
        (o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device)).sum()
        for o in outs
    )
    names = [k for k, v in x.items() if v.requires_grad]
    grads = torch.autograd.grad(loss, [x[k] for k in names])
    return outs, dict(zip(names, grads))


def check(fn: Callable[[dict, str], tuple], inputs: dict) -> tuple[float, float, str]:
    """(output error, worst gradient error, its input's name): triton fp32 vs reference fp64."""
    ref_out, ref_grads = loss_and_grads(
        lambda x: fn(x, "ref"), leaves(inputs, "cuda", torch.float64)
    )
    out, grads = loss_and_grads(lambda x: fn(x, "triton"), leaves(inputs, "cuda"))
    out_err = max(rel_rms(r, o) for r, o in zip(ref_out, out))
    worst = max(ref_grads, key=lambda k: rel_rms(ref_grads[k], grads[k]))
    return out_err, rel_rms(ref_grads[worst], grads[worst]), worst


def timed(name: str, bind: Callable[[dict], Call], inputs: dict, device: str) -> dict:
    """fwd and fwd+bwd ms of ``bind(x)()`` on ``device`` (GPU: CUDA events, CPU: host clock)."""
    fwd_x, bwd_x = leaves(inputs, device, grad=False), leaves(inputs, device)
    fwd_call, bwd_call = bind(fwd_x), bind(bwd_x)

    def backward() -> None:
        out = bwd_call()
        (out[0] if isinstance(out, tuple) else out).float().sum().backward()

    measure = gpu_ms if device == "cuda" else cpu_ms
    row = {"name": name}
    try:
        with torch.no_grad():
            row["fwd"] = measure(fwd_call)
        row["fwd+bwd"] = measure(backward)
    except Exception as error:  # a peer that cannot run a shape says why in the table
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    print(f"  {name}: {row}", flush=True)
    return row


def table(title: str, intro: str, shape_label: str, sections: list[tuple[str, dict, list]],
          copy: float) -> str:  # fmt: skip
    lines = [
        f"### {title}",
        "",
        intro,
        "",
        f"| shape {shape_label} | out rel err | worst grad rel err | implementation | fwd ms | "
        "fwd+bwd ms | x CPU fwd | x CPU fwd+bwd | fwd GB/s (% copy) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, accuracy, rows in sections:
        cpu = next(r for r in rows if r["name"].startswith("ssmkit cpu"))
        for i, row in enumerate(rows):
            first = i == 0
            cells = [shape if first else "", accuracy["out"] if first else "",
                     accuracy["grad"] if first else "", row["name"]]  # fmt: skip
            if "error" in row:
                cells += [f"failed: {row['error']}"] + [""] * 4
            else:
                fwd, fb = row["fwd"], row["fwd+bwd"]
                gbs = accuracy["bytes"] / (fwd * 1e-3) / 1e9
                cells += [
                    f"{fwd:.3f}",
                    f"{fb:.3f}",
                    f"{cpu.get('fwd', float('nan')) / fwd:.1f}x",
                    f"{cpu.get('fwd+bwd', float('nan')) / fb:.1f}x",
                    f"{gbs:.0f} ({100 * gbs / copy:.0f}%)" if row["device"] == "cuda" else "",
                ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_section(shapes, make_inputs, check_fn, impls, traffic) -> list:
    sections = []
    for shape in shapes:
        print(f"{shape}", flush=True)
        inputs = make_inputs(*shape)
        out_err, grad_err, worst = check_fn(inputs)
        verdict = "" if out_err <= 1e-3 and grad_err <= 1e-2 else " FAIL"
        accuracy = {
            "out": f"{out_err:.1e}{verdict}",
            "grad": f"{grad_err:.1e} (d{worst})",
            "bytes": traffic(*shape),
        }
        rows = []
        for name, device, bind in impls:
            row = timed(name, bind, inputs, device)
            row["device"] = device
            rows.append(row)
        sections.append((str(shape), accuracy, rows))
    return sections


def mambapy_or_none():
    if importlib.util.find_spec("mambapy") is None:
        return None
    from mambapy.pscan import pscan

    return pscan


def missing(name: str) -> Callable[[dict], Call]:
    def bind(x: dict) -> Call:
        def call() -> None:
            raise ModuleNotFoundError(f"{name} is not installed on this machine")

        return call

    return bind


# --------------------------------------------------------------------------- operators


def selective_scan_section(quick: bool) -> tuple[str, str, str, list]:
    from ssmkit.kernels import selective_scan

    shapes = [(2, 1024, 256, 16)] if quick else [(2, 1024, 256, 16), (1, 8192, 512, 16),
                                                 (8, 2048, 1536, 16)]  # fmt: skip

    def make(batch, length, channels, n_state):
        torch.manual_seed(0)
        groups = 2
        return {
            "u": torch.randn(batch, channels, length),
            "delta": torch.randn(batch, channels, length) * 0.5,
            "A": -torch.rand(channels, n_state) - 0.5,
            "B": torch.randn(batch, groups, n_state, length),
            "C": torch.randn(batch, groups, n_state, length),
            "D": torch.randn(channels),
            "z": torch.randn(batch, channels, length),
            "delta_bias": torch.randn(channels) * 0.1,
            "initial_state": torch.randn(batch, channels, n_state),
        }

    def full(x: dict, backend: str) -> tuple:
        args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        return selective_scan(*args, True, True, initial_state=x["initial_state"],
                              backend=backend)  # fmt: skip

    def bind(backend: str) -> Callable[[dict], Call]:
        return lambda x: lambda: full(x, backend)

    pscan = mambapy_or_none()

    def mambapy(x: dict) -> Call:
        # mambapy's parallel scan over (B, L, E, N) states with the same softplus, skip and gate;
        # B and C of the first group for every channel (the same work, not the same function)
        def call() -> torch.Tensor:
            u, gate = x["u"].transpose(1, 2), x["z"].transpose(1, 2)
            delta = torch.nn.functional.softplus(x["delta"] + x["delta_bias"][:, None])
            delta = delta.transpose(1, 2).unsqueeze(-1)  # (B, L, E, 1)
            B, C = x["B"][:, 0].transpose(1, 2), x["C"][:, 0].transpose(1, 2)  # (B, L, N)
            hs = pscan(torch.exp(delta * x["A"]), delta * B.unsqueeze(2) * u.unsqueeze(-1))
            y = (hs @ C.unsqueeze(-1)).squeeze(-1) + x["D"] * u
            return y * torch.nn.functional.silu(gate)

        return call

    impls = [
        ("ssmkit triton", "cuda", bind("triton")),
        ("ssmkit ref (PyTorch on GPU)", "cuda", bind("ref")),
        ("mambapy pscan (GPU)", "cuda", mambapy if pscan else missing("mambapy")),
        ("ssmkit cpu (CPU path)", "cpu", bind("cpu")),
    ]

    def traffic(batch, length, channels, n_state):
        return 4 * (4 * batch * channels * length + 4 * batch * n_state * length)

    sections = run_section(shapes, make, lambda x: check(full, x), impls, traffic)
    intro = (
        "u, delta, z (B, D, L), A (D, N), 2 groups of B, C (B, 2, N, L), D, delta bias + "
        "softplus, initial state; fp32. Error columns: Triton (fp32) against the reference "
        "backend in float64 on the GPU (relative RMS; gradients of every input). mambapy's row "
        "computes a comparable scan (its pscan over (B, L, E, N) states, one B/C group) with "
        "gate and softplus, as a same-run peer, not as a check."
    )
    return "selective_scan (Mamba-1)", intro, "(B, L, D, N)", sections


def ssd_scan_section(quick: bool) -> tuple[str, str, str, list]:
    from ssmkit.kernels import ssd_scan

    scan_bench = _load_cpu_benchmark()
    shapes = [(2, 1024, 8, 64, 64)] if quick else [(2, 1024, 8, 64, 64), (4, 4096, 24, 64, 128)]
    chunk = 256

    def make(batch, length, heads, headdim, n_state):
        torch.manual_seed(0)
        return {
            "x": torch.randn(batch, length, heads, headdim),
            "dt": torch.randn(batch, length, heads) * 0.5 - 1,
            "A": -torch.rand(heads) * 4 - 1,
            "B": torch.randn(batch, length, 1, n_state),
            "C": torch.randn(batch, length, 1, n_state),
            "D": torch.randn(heads),
            "z": torch.randn(batch, length, heads, headdim),
            "dt_bias": torch.randn(heads) * 0.5,
            "h0": torch.randn(batch, heads, headdim, n_state),
        }

    def full(x: dict, backend: str) -> tuple:
        args = [x[k] for k in ("x", "dt", "A", "B", "C")]
        return ssd_scan(*args, chunk, x["D"], x["z"], x["dt_bias"], x["h0"], dt_softplus=True,
                        return_final_states=True, backend=backend)  # fmt: skip

    def bind(backend: str) -> Callable[[dict], Call]:
        return lambda x: lambda: full(x, backend)

    def listing(x: dict) -> Call:
        def call():
            dt = torch.nn.functional.softplus(x["dt"] + x["dt_bias"])
            return scan_bench._ssd_listing(x["x"], dt, x["A"], x["B"], x["C"], chunk)[0]

        return call

    impls = [
        ("ssmkit triton", "cuda", bind("triton")),
        ("ssmkit ref (PyTorch on GPU)", "cuda", bind("ref")),
        ("SSD paper listing (GPU)", "cuda", listing),
        ("ssmkit cpu (CPU path)", "cpu", bind("cpu")),
    ]

    def traffic(batch, length, heads, headdim, n_state):
        return 4 * (3 * batch * length * heads * headdim + 2 * batch * length * n_state)

    sections = run_section(shapes, make, lambda x: check(full, x), impls, traffic)
    intro = (
        f"x, z (b, l, h, p), dt (b, l, h) with bias + softplus, A (h,), one B/C group "
        f"(b, l, 1, n), D, initial state; chunk {chunk}; fp32. The listing row is the SSD paper's "
        "minimal listing (without z, D, h0) as a same-run peer."
    )
    return "ssd_scan (Mamba-2 SSD)", intro, "(b, l, h, p, n)", sections


def diag_scan_section(quick: bool) -> tuple[str, str, str, list]:
    from ssmkit.kernels import diag_scan

    shapes = [(4, 2048, 64)] if quick else [(4, 2048, 64), (2, 2048, 4096), (16, 8192, 1024)]

    def make(batch, length, width):
        torch.manual_seed(0)
        return {
            "a": torch.rand(batch, length, width) * 0.5 + 0.5,
            "b": torch.randn(batch, length, width),
            "h0": torch.randn(batch, width),
        }

    def full(x: dict, backend: str) -> tuple:
        return (diag_scan(x["a"], x["b"], x["h0"], backend=backend),)

    def bind(backend: str) -> Callable[[dict], Call]:
        return lambda x: lambda: full(x, backend)[0]

    pscan = mambapy_or_none()

    def mambapy(x: dict) -> Call:
        return lambda: pscan(x["a"].unsqueeze(-1), x["b"].unsqueeze(-1))

    impls = [
        ("ssmkit triton", "cuda", bind("triton")),
        ("ssmkit ref (PyTorch on GPU)", "cuda", bind("ref")),
        ("mambapy pscan (GPU, no h0)", "cuda", mambapy if pscan else missing("mambapy")),
        ("ssmkit cpu (CPU path)", "cpu", bind("cpu")),
    ]
    sections = run_section(shapes, make, lambda x: check(full, x), impls,
                           lambda b, n, s: 4 * 3 * b * n * s)  # fmt: skip
    intro = "a, b (B, L, S) real fp32, initial state h0 (B, S)."
    return "diag_scan (h_t = a_t h_{t-1} + b_t)", intro, "(B, L, S)", sections


def cross_scan_section(quick: bool) -> tuple[str, str, str, list]:
    from ssmkit.kernels import cross_merge, cross_scan

    shapes = [(8, 96, 56, 56)] if quick else [(8, 96, 56, 56), (32, 192, 28, 28)]

    def make(batch, channels, height, width):
        torch.manual_seed(0)
        return {"x": torch.randn(batch, channels, height, width)}

    def full(x: dict, backend: str) -> tuple:
        # scan then merge: VMamba's round trip (each output pixel sums its 4 reads)
        height, width = x["x"].shape[-2:]
        y = cross_scan(x["x"], backend=backend)
        return (cross_merge(y * 1.5, height, width, backend=backend),)

    def bind(backend: str) -> Callable[[dict], Call]:
        return lambda x: lambda: full(x, backend)[0]

    impls = [
        ("ssmkit triton", "cuda", bind("triton")),
        ("ssmkit ref (PyTorch on GPU)", "cuda", bind("ref")),
        ("ssmkit cpu (CPU path)", "cpu", bind("cpu")),
    ]
    # scan reads x, writes 4 copies; merge reads 4, writes 1 (the scaling pass is not counted)
    sections = run_section(shapes, make, lambda x: check(full, x), impls,
                           lambda b, c, h, w: 4 * 10 * b * c * h * w)  # fmt: skip
    intro = (
        "VMamba's four orders: cross_scan (B, C, H, W) -> (B, 4, C, H*W), a scaling, then "
        "cross_merge back; fp32. GB/s counts the scan and merge traffic."
    )
    return "cross_scan + cross_merge (VMamba)", intro, "(B, C, H, W)", sections


@functools.cache
def _load_cpu_benchmark():
    spec = importlib.util.spec_from_file_location(
        "ssmkit_bench_scan", Path(__file__).with_name("scan.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


SECTIONS = {
    "selective_scan": selective_scan_section,
    "ssd_scan": ssd_scan_section,
    "diag_scan": diag_scan_section,
    "cross_scan": cross_scan_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one shape per operator")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        raise SystemExit(
            'scan_gpu needs a CUDA GPU and the triton package (pip install "ssmkit[triton]"); '
            f"this machine has cuda={torch.cuda.is_available()}. The CPU benchmark is "
            "`ssmkit bench scan`."
        )
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("scan_gpu times compiled kernels: unset TRITON_INTERPRET.")
    torch.set_num_threads(args.cpu_threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # reference and peers in true fp32
    copy = copy_gbs()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks = []
    for name in args.sections:
        title, intro, shape, sections = SECTIONS[name](args.quick)
        blocks.append(table(title, intro, "= " + shape, sections, copy))
    import triton

    props = torch.cuda.get_device_properties(0)
    footer = (
        f"Run: `ssmkit bench scan_gpu{' --quick' if args.quick else ''}`, {started}, on "
        f"{props.name} ({props.multi_processor_count} SMs; device-to-device copy {copy:.0f} GB/s "
        f"same run) and its host's {args.cpu_threads} CPU threads for the CPU path; torch "
        f"{torch.__version__}, triton {triton.__version__}. GPU times: median of "
        "`triton.testing.do_bench` (CUDA events, 200 ms of repeats after warm-up); CPU times: "
        "median of 5 host-clock calls after a warm-up. `x CPU` = CPU-path time over this row's "
        "time. Error verdict: FAIL if out > 1e-3 or grad > 1e-2."
    )
    text = "# Scan operators on a GPU (Triton backend)\n\n" + "\n\n".join(blocks) + "\n\n" + footer
    print(text)
    write_text_atomic(args.out, text + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
