"""Scan benchmark: ssmkit's scan operators against peers in the same run, with a roofline.

One section per operator (``SECTIONS`` below: add ``"op": bench_op`` to append a section). Every
section reports, per shape and implementation, the median of ``--repeats`` (>= 5) wall times for
the forward (under ``no_grad``) and forward+backward, and the peak memory of one fwd+bwd call.

Peak memory: each (implementation, shape) runs once more in a fresh subprocess. After the inputs
exist and a tiny warm-up call has loaded every library, the kernel's peak-RSS counter is reset
(``echo 5 > /proc/self/clear_refs``); the number is the peak RSS (``VmHWM``) during one fwd+bwd
call minus the RSS just before it. It counts everything the call touches (autograd buffers,
temporaries, allocator slack), which is what decides whether a shape fits. Linux only.

Roofline: a same-run microbenchmark of the machine measures memory copy bandwidth (GB/s, bytes
read + written) and exp throughput (Gexp/s, ``torch.exp`` on all threads). For each scan the
minimal traffic (every input read once, every output written once, fp32) and the number of exps
give a lower bound ``max(bytes / bandwidth, exps / exp_rate)``; ``roofline`` is that bound divided
by the measured time (1.0 = at the machine's limit).

    ssmkit bench scan [--quick] [--repeats 5] [--sections selective_scan] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ssmkit.core.files import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "scan.md"


# --------------------------------------------------------------------------- machine and timing


@dataclass
class Machine:
    copy_gbs: float  # GB/s, bytes read + written by a large tensor copy
    exp_gps: float  # G exp/s of torch.exp on a large fp32 tensor
    threads: int

    def describe(self) -> str:
        return (
            f"{platform.processor() or platform.machine()}, {self.threads} torch threads: memory "
            f"copy {self.copy_gbs:.1f} GB/s, exp {self.exp_gps:.2f} Gexp/s (same-run microbenchmark)"
        )


@dataclass
class Timing:
    seconds: float
    repeated: bool  # False: the warm-up call alone exceeded the budget; seconds is that one call

    def __str__(self) -> str:
        ms = f"{self.seconds * 1e3:.1f}"
        return ms if self.repeated else f"{ms} (1 call, over budget)"


def median_time(fn: Callable[[], object], repeats: int, budget: float = float("inf")) -> Timing:
    """Median wall time of ``repeats`` calls after one warm-up call, unless the warm-up call
    alone takes more than ``budget`` seconds (then that single time, flagged)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > budget:
        return Timing(first, repeated=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), repeated=True)


def measure_machine(repeats: int) -> Machine:
    size = 1 << 25  # 128 MiB of fp32, well beyond the caches
    src, dst = torch.rand(size), torch.empty(size)
    copy = median_time(lambda: dst.copy_(src), repeats).seconds
    exp = median_time(lambda: torch.exp(src, out=dst), repeats).seconds
    return Machine(2 * 4 * size / copy / 1e9, size / exp / 1e9, torch.get_num_threads())


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{key} not in /proc/self/status")


def measure_memory_in_subprocess(section: str, case: dict) -> float | None:
    """Peak memory (MiB) of one fwd+bwd call in a fresh process; None where unsupported/failed."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, __file__, "--memory-case", json.dumps({"section": section, **case})]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        print(f"  memory case failed: {case}: {result.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return float(result.stdout.strip().splitlines()[-1])


def _memory_case(spec: str) -> None:
    case = json.loads(spec)
    section = SECTIONS[case.pop("section")]
    make_call, warm_up = section.memory_call(case)
    warm_up()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    before = _status_mib("VmRSS:")
    make_call()
    print(_status_mib("VmHWM:") - before)


def fmt_ms(timing: Timing | None) -> str:
    return "n/a" if timing is None else str(timing)


# --------------------------------------------------------------------------- selective_scan


def _ss_inputs(batch: int, length: int, channels: int, n_state: int, grad: bool) -> dict:
    torch.manual_seed(0)
    x = {
        "u": torch.randn(batch, channels, length),
        "delta": torch.rand(batch, channels, length) * 0.1,  # post-softplus-sized steps
        "A": -torch.rand(channels, n_state) - 0.5,
        "B": torch.randn(batch, n_state, length),
        "C": torch.randn(batch, n_state, length),
        "D": torch.randn(channels),
    }
    return {k: v.requires_grad_(grad) for k, v in x.items()}


def _ss_impls() -> dict[str, Callable[[dict], Callable[[], torch.Tensor]]]:
    """name -> (inputs -> zero-argument call returning y)."""
    from mambapy.mamba import MambaBlock

    from ssmkit.kernels import selective_scan

    def ssmkit(backend: str) -> Callable[[dict], Callable[[], torch.Tensor]]:
        def bind(x: dict) -> Callable[[], torch.Tensor]:
            args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"])
            return lambda: selective_scan(*args, backend=backend)

        return bind

    def mambapy_layout(x: dict) -> tuple:
        # mambapy works on (B, L, E) / (B, L, N) activations; transposing is part of its cost here
        # as it would be for a caller holding mamba_ssm-layout tensors
        return tuple(x[k].transpose(1, 2) for k in ("u", "delta", "B", "C"))

    def mambapy_pscan(x: dict) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            u, delta, B, C = mambapy_layout(x)
            return MambaBlock.selective_scan(None, u, delta, x["A"], B, C, x["D"])

        return call

    class _Config:  # what MambaBlock.selective_scan_seq reads from self
        def __init__(self, x: dict) -> None:
            self.d_inner, self.d_state = x["A"].shape

    class _Self:
        def __init__(self, x: dict) -> None:
            self.config = _Config(x)

    def naive_loop(x: dict) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            u, delta, B, C = mambapy_layout(x)
            return MambaBlock.selective_scan_seq(_Self(x), u, delta, x["A"], B, C, x["D"])

        return call

    return {
        "ssmkit cpu": ssmkit("cpu"),
        "ssmkit ref": ssmkit("ref"),
        "mambapy pscan": mambapy_pscan,
        "naive loop": naive_loop,
    }


def _ss_cost(batch: int, length: int, channels: int, n_state: int, backward: bool) -> tuple:
    """(bytes, exps, flops): minimal fp32 traffic, exps and flops of the scan."""
    bel, bnl = batch * channels * length, batch * n_state * length
    beln = bel * n_state
    # forward: read u, delta, B, C, A, D; write y.  backward adds: read dy (+ inputs again), write
    # du, ddelta, dB, dC (the per-chunk states are negligible).
    fwd_bytes = 4 * (3 * bel + 2 * bnl + channels * n_state + channels)
    # forward per (b, e, t, n): dt*A, exp, a*h, dt*u*B (fma), C*h (fma) ~ 6 flops + 1 exp
    if not backward:
        return fwd_bytes, beln, 6 * beln
    bwd_bytes = 4 * (6 * bel + 4 * bnl)
    # backward recomputes the states (6 flops + 1 exp) and runs the adjoint (~14 flops)
    return fwd_bytes + bwd_bytes, 2 * beln, 26 * beln


# The naive loop's backward indexes x[:, t] under autograd: every step's backward zero-fills a
# full (B, L, E, N) gradient, O(L^2 E N) (REFERENCES.md 1.13.1). At L = 1024 one such call ran
# for over 8 minutes on the loaded 2-core machine without finishing, so it is not timed.
_SS_SKIP = {
    ("naive loop", "fwd+bwd", 1024): "O(L^2) backward, > 8 min per call",
    ("naive loop", "fwd+bwd", 8192): "O(L^2) backward",
}


def _seconds(timing: Timing | None) -> float | None:
    return None if timing is None else timing.seconds


def bench_selective_scan(args: argparse.Namespace, machine: Machine) -> tuple[str, dict]:
    shapes = [(2, 1024, 256, 16)] if args.quick else [(2, 1024, 256, 16), (1, 8192, 512, 16)]
    impls = _ss_impls()
    lines = [
        "### selective_scan (Mamba-1)",
        "",
        "Inputs u, delta (B, D, L), A (D, N), shared B, C (B, N, L), D skip; fp32. Times in ms "
        "(median); `x mambapy` = speed-up over mambapy's pscan path; roofline = lower bound "
        "(max of traffic / copy bandwidth, exps / exp rate) over measured time; peak MiB = growth "
        "of peak RSS during one fwd+bwd call in a fresh process.",
        "",
        "| shape (B, L, D, N) | implementation | fwd ms | fwd+bwd ms | x mambapy fwd | "
        "x mambapy fwd+bwd | fwd GB/s | fwd GFLOP/s | fwd roofline | fwd+bwd roofline | "
        "peak MiB fwd+bwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    headline = {}
    for shape in shapes:
        batch, length, channels, n_state = shape
        timings: dict[str, dict[str, Timing | None]] = {}
        for name, bind in impls.items():
            timings[name] = {}
            for mode in ("fwd", "fwd+bwd"):
                skip = _SS_SKIP.get((name, mode, length))
                if skip:
                    timings[name][mode] = None
                    continue
                x = _ss_inputs(*shape, grad=mode == "fwd+bwd")
                call = bind(x)
                if mode == "fwd":

                    def run(call: Callable[[], torch.Tensor] = call) -> None:
                        with torch.no_grad():
                            call()
                else:

                    def run(call: Callable[[], torch.Tensor] = call) -> None:
                        call().sum().backward()

                timings[name][mode] = median_time(run, args.repeats, args.budget)
                print(f"  {shape} {name} {mode}: {fmt_ms(timings[name][mode])} ms", flush=True)
        for name in impls:
            memory = None
            if not args.no_memory and timings[name]["fwd+bwd"] is not None:
                memory = measure_memory_in_subprocess(
                    "selective_scan", {"impl": name, "shape": list(shape)}
                )
            fwd, fb = (_seconds(timings[name][m]) for m in ("fwd", "fwd+bwd"))
            peer_fwd, peer_fb = (_seconds(timings["mambapy pscan"][m]) for m in ("fwd", "fwd+bwd"))
            f_bytes, f_exps, f_flops = _ss_cost(*shape, backward=False)
            b_bytes, b_exps, _ = _ss_cost(*shape, backward=True)

            def bound(nbytes: float, exps: float) -> float:
                return max(nbytes / (machine.copy_gbs * 1e9), exps / (machine.exp_gps * 1e9))

            cells = [
                f"({batch}, {length}, {channels}, {n_state})",
                name,
                fmt_ms(timings[name]["fwd"]),
                fmt_ms(timings[name]["fwd+bwd"]),
                f"{peer_fwd / fwd:.1f}x" if fwd and peer_fwd else "n/a",
                f"{peer_fb / fb:.1f}x" if fb and peer_fb else "n/a",
                f"{f_bytes / fwd / 1e9:.2f}" if fwd else "n/a",
                f"{f_flops / fwd / 1e9:.2f}" if fwd else "n/a",
                f"{bound(f_bytes, f_exps) / fwd:.2f}" if fwd else "n/a",
                f"{bound(b_bytes, b_exps) / fb:.2f}" if fb else "n/a",
                "n/a" if memory is None else f"{memory:.0f}",
            ]
            if name == "naive loop" and fb is None:
                cells[3] = "skipped: " + _SS_SKIP[(name, "fwd+bwd", length)]
            lines.append("| " + " | ".join(cells) + " |")
            if name == "ssmkit cpu" and shape == shapes[0]:
                headline = {
                    "fwd+bwd speed-up": peer_fb / fb if fb and peer_fb else None,
                    "fwd speed-up": peer_fwd / fwd if fwd and peer_fwd else None,
                    "memory": memory,
                }
    return "\n".join(lines), headline


def _ss_memory_call(case: dict) -> tuple[Callable[[], None], Callable[[], None]]:
    impls = _ss_impls()
    bind = impls[case["impl"]]
    x = _ss_inputs(*case["shape"], grad=True)
    tiny = _ss_inputs(1, 8, 4, case["shape"][3], grad=True)
    return (lambda: bind(x)().sum().backward()), (lambda: bind(tiny)().sum().backward())


# --------------------------------------------------------------------------- ssd_scan


def _ssd_inputs(batch: int, length: int, heads: int, headdim: int, n_state: int, grad: bool):
    torch.manual_seed(0)
    x = {
        "x": torch.randn(batch, length, heads, headdim),
        "dt": torch.rand(batch, length, heads) * 0.1,
        "A": -torch.rand(heads) * 4 - 1,
        "B": torch.randn(batch, length, 1, n_state),
        "C": torch.randn(batch, length, 1, n_state),
    }
    return {k: v.requires_grad_(grad and k != "A") for k, v in x.items()}


def _ssd_segsum(a: torch.Tensor) -> torch.Tensor:
    T = a.shape[-1]
    keep = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)
    out = a.unsqueeze(-1).expand(*a.shape, T).masked_fill(~keep, 0).cumsum(-2)
    return out.masked_fill(
        ~torch.ones(T, T, dtype=torch.bool, device=a.device).tril(), float("-inf")
    )


def _ssd_listing(x, dt, A, B, C, chunk: int):
    """The SSD paper's minimal listing (Dao & Gu 2024, Listing 1), written out: all four steps
    as einsums, the inter-chunk recurrence as a second quadratic segsum over chunks."""
    b, length, h, p = x.shape
    c = length // chunk
    xd = (x * dt.unsqueeze(-1)).reshape(b, c, chunk, h, p)
    Bc = B.expand(b, length, h, B.shape[-1]).reshape(b, c, chunk, h, -1)
    Cc = C.expand(b, length, h, C.shape[-1]).reshape(b, c, chunk, h, -1)
    a = (dt * A).reshape(b, c, chunk, h).permute(0, 3, 1, 2)  # (b, h, c, l)
    a_cum = a.cumsum(-1)
    L = torch.exp(_ssd_segsum(a))
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, L, xd)
    decay_states = torch.exp(a_cum[..., -1:] - a_cum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, xd)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    decay_chunk = torch.exp(_ssd_segsum(torch.nn.functional.pad(a_cum[..., -1], (1, 0))))
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final = new_states[:, :-1], new_states[:, -1]
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states, torch.exp(a_cum))
    return (y_diag + y_off).reshape(b, length, h, p), final


def _ssd_recurrence(x, dt, A, B, C):
    """One step at a time: h = exp(dt A) h + dt x ⊗ B; y = h C (unbind: linear backward)."""
    h = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[-1])
    ys = []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        h = (
            torch.exp(dt_t * A)[..., None, None] * h
            + (dt_t[..., None] * x_t)[..., None] * B_t[:, None, None, 0]
        )
        ys.append(torch.einsum("bhpn,bn->bhp", h, C_t[:, 0]))
    return torch.stack(ys, 1), h


def _ssd_impls(chunk: int) -> dict[str, Callable[[dict], Callable[[], torch.Tensor]]]:
    from ssmkit.kernels import ssd_scan

    def ssmkit(backend: str):
        def bind(x: dict):
            args = (x["x"], x["dt"], x["A"], x["B"], x["C"], chunk)
            return lambda: ssd_scan(*args, backend=backend)

        return bind

    return {
        "ssmkit cpu": ssmkit("cpu"),
        "ssmkit ref": ssmkit("ref"),
        "naive SSD listing": lambda x: (
            lambda: _ssd_listing(x["x"], x["dt"], x["A"], x["B"], x["C"], chunk)[0]
        ),
        "per-step recurrence": lambda x: (
            lambda: _ssd_recurrence(x["x"], x["dt"], x["A"], x["B"], x["C"])[0]
        ),
    }


def _ssd_flops(batch: int, length: int, heads: int, headdim: int, n_state: int, chunk: int):
    """Forward flops of the chunked algorithm: C Bᵀ and its product with dt x (quadratic in the
    chunk), chunk states and state read-out (linear)."""
    quad = 2 * batch * length * chunk * (n_state + heads * headdim)
    return quad + 4 * batch * length * heads * headdim * n_state


def _run_modes(impls, make_inputs, shape, args, label, skip=None):
    timings: dict[str, dict[str, Timing | None]] = {}
    for name, bind in impls.items():
        timings[name] = {}
        for mode in ("fwd", "fwd+bwd"):
            if skip and skip(name, mode):
                timings[name][mode] = None
                continue
            call = bind(make_inputs(*shape, grad=mode == "fwd+bwd"))
            if mode == "fwd":

                def run(call=call) -> None:
                    with torch.no_grad():
                        call()
            else:

                def run(call=call) -> None:
                    call().sum().backward()

            timings[name][mode] = median_time(run, args.repeats, args.budget)
            print(f"  {label} {shape} {name} {mode}: {fmt_ms(timings[name][mode])} ms", flush=True)
    return timings


def _ssd_skip(shape: tuple) -> Callable[[str, str], bool]:
    """The per-step recurrence's fwd+bwd builds an L-step autograd graph of (b, h, p, n) states:
    over 8 minutes for one call at L = 1024 on the loaded 2-core machine, so it is not timed."""
    return lambda name, mode: (
        name == "per-step recurrence" and mode == "fwd+bwd" and shape[1] >= 1024
    )


def bench_ssd_scan(args: argparse.Namespace, machine: Machine) -> tuple[str, dict]:
    chunk = 256
    shapes = [(2, 1024, 8, 64, 64)] if args.quick else [(2, 1024, 8, 64, 64), (1, 4096, 8, 64, 128)]
    impls = _ssd_impls(chunk)
    lines = [
        "### ssd_scan (Mamba-2 SSD)",
        "",
        f"x (b, l, h, p), dt (b, l, h), A (h,), one B/C group (b, l, 1, n), chunk {chunk}; fp32. "
        "`naive SSD listing` = the SSD paper's minimal listing (all-einsum, quadratic segsum over "
        "chunks too); `per-step recurrence` = h = exp(dt A) h + dt x ⊗ B, y = h C, one step at a "
        "time (unbind). `x listing` = speed-up over the listing; GFLOP/s counts the chunked "
        "algorithm's forward flops; peak MiB as above.",
        "",
        "| shape (b, l, h, p, n) | implementation | fwd ms | fwd+bwd ms | x listing fwd | "
        "x listing fwd+bwd | fwd GFLOP/s | peak MiB fwd+bwd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    headline = {}
    for shape in shapes:
        timings = _run_modes(impls, _ssd_inputs, shape, args, "ssd_scan", skip=_ssd_skip(shape))
        flops = _ssd_flops(*shape, chunk)
        for name in impls:
            timed = timings[name]["fwd+bwd"]
            memory = None
            if not args.no_memory and timed is not None and timed.repeated:
                memory = measure_memory_in_subprocess(
                    "ssd_scan", {"impl": name, "shape": list(shape)}
                )
            fwd, fb = (_seconds(timings[name][m]) for m in ("fwd", "fwd+bwd"))
            peer = [_seconds(timings["naive SSD listing"][m]) for m in ("fwd", "fwd+bwd")]
            lines.append(
                "| "
                + " | ".join(
                    [
                        str(shape),
                        name,
                        fmt_ms(timings[name]["fwd"]),
                        fmt_ms(timed) if timed else "skipped: > 8 min per call",
                        f"{peer[0] / fwd:.1f}x" if fwd and peer[0] else "n/a",
                        f"{peer[1] / fb:.1f}x" if fb and peer[1] else "n/a",
                        f"{flops / fwd / 1e9:.1f}" if fwd else "n/a",
                        "n/a" if memory is None else f"{memory:.0f}",
                    ]
                )  # fmt: skip
                + " |"
            )
            if name == "ssmkit cpu" and shape == shapes[0] and fb and peer[1]:
                headline = {"fwd+bwd speed-up vs listing": peer[1] / fb}
    return "\n".join(lines), headline


def _ssd_memory_call(case: dict):
    bind = _ssd_impls(256)[case["impl"]]
    x = _ssd_inputs(*case["shape"], grad=True)
    tiny = _ssd_inputs(1, 256, 2, 4, 4, grad=True)
    return (lambda: bind(x)().sum().backward()), (lambda: bind(tiny)().sum().backward())


# --------------------------------------------------------------------------- diag_scan


def _diag_inputs(batch: int, length: int, width: int, grad: bool) -> dict:
    torch.manual_seed(0)
    x = {
        "a": torch.rand(batch, length, width, 1) * 0.5 + 0.49,
        "b": torch.randn(batch, length, width, 1),
    }
    return {k: v.requires_grad_(grad) for k, v in x.items()}


def _diag_impls() -> dict[str, Callable[[dict], Callable[[], torch.Tensor]]]:
    from mambapy.pscan import pscan

    from ssmkit.kernels import diag_scan

    def ssmkit(backend: str):
        return lambda x: lambda: diag_scan(x["a"], x["b"], backend=backend)

    return {
        "ssmkit cpu": ssmkit("cpu"),
        "ssmkit ref": ssmkit("ref"),
        "mambapy pscan": lambda x: lambda: pscan(x["a"], x["b"]),
    }


def bench_diag_scan(args: argparse.Namespace, machine: Machine) -> tuple[str, dict]:
    # (B, L, S): an S5/LRU-sized state (B*S < 512: chunked CPU path) and a wide one (loop path)
    shapes = [(4, 2048, 64)] if args.quick else [(4, 2048, 64), (2, 2048, 4096)]
    impls = _diag_impls()
    lines = [
        "### diag_scan (h_t = a_t h_{t-1} + b_t)",
        "",
        "a, b (B, L, S) real fp32 (run as (B, L, S, 1) for mambapy's pscan, a Blelloch scan). "
        "GB/s = minimal traffic (fwd: read a, b, write h; bwd adds read dh, a, h, write da, db) "
        "over time; roofline = that traffic at the machine's copy bandwidth over measured time.",
        "",
        "| shape (B, L, S) | implementation | fwd ms | fwd+bwd ms | x pscan fwd | "
        "x pscan fwd+bwd | fwd GB/s | fwd roofline | fwd+bwd roofline | peak MiB fwd+bwd |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    headline = {}
    for shape in shapes:
        timings = _run_modes(impls, _diag_inputs, shape, args, "diag_scan")
        elems = shape[0] * shape[1] * shape[2]
        f_bytes, b_bytes = 12 * elems, 32 * elems
        for name in impls:
            timed = timings[name]["fwd+bwd"]
            memory = None
            if not args.no_memory and timed is not None and timed.repeated:
                memory = measure_memory_in_subprocess(
                    "diag_scan", {"impl": name, "shape": list(shape)}
                )
            fwd, fb = (_seconds(timings[name][m]) for m in ("fwd", "fwd+bwd"))
            peer = [_seconds(timings["mambapy pscan"][m]) for m in ("fwd", "fwd+bwd")]
            bw = machine.copy_gbs * 1e9
            lines.append(
                "| "
                + " | ".join(
                    [
                        str(shape),
                        name,
                        fmt_ms(timings[name]["fwd"]),
                        fmt_ms(timed),
                        f"{peer[0] / fwd:.1f}x" if fwd and peer[0] else "n/a",
                        f"{peer[1] / fb:.1f}x" if fb and peer[1] else "n/a",
                        f"{f_bytes / fwd / 1e9:.2f}" if fwd else "n/a",
                        f"{f_bytes / bw / fwd:.2f}" if fwd else "n/a",
                        f"{b_bytes / bw / fb:.2f}" if fb else "n/a",
                        "n/a" if memory is None else f"{memory:.0f}",
                    ]
                )  # fmt: skip
                + " |"
            )
            if name == "ssmkit cpu" and shape == shapes[0] and fb and peer[1]:
                headline = {"fwd+bwd speed-up vs pscan": peer[1] / fb}
    return "\n".join(lines), headline


def _diag_memory_call(case: dict):
    bind = _diag_impls()[case["impl"]]
    x = _diag_inputs(*case["shape"], grad=True)
    tiny = _diag_inputs(1, 16, 4, grad=True)
    return (lambda: bind(x)().sum().backward()), (lambda: bind(tiny)().sum().backward())


# --------------------------------------------------------------------------- mamba_inference


def _mixer(kind: str, length: int):
    """A Vim-Ti mixer (d_model 192, N 16, expand 2) and its input (1, L, 192), eval, fp32."""
    from ssmkit.core import BiMamba, Mamba

    torch.manual_seed(0)
    mixer = BiMamba(192, d_state=16) if kind == "BiMamba v2" else Mamba(192, d_state=16)
    return mixer.eval(), torch.randn(1, length, 192)


def _mi_call(kind: str, impl: str, length: int) -> Callable[[], torch.Tensor]:
    """Inference forward of one mixer: the fused kernels, or the unfused autograd-path code."""
    import importlib

    mixer, x = _mixer(kind, length)
    modules = [importlib.import_module(f"ssmkit.core.{m}") for m in ("mamba", "bimamba")]

    def call() -> torch.Tensor:
        saved = [m.can_fuse for m in modules]
        if impl == "unfused":
            for m in modules:
                m.can_fuse = lambda *a: False
        try:
            with torch.inference_mode():
                return mixer(x)
        finally:
            for m, f in zip(modules, saved):
                m.can_fuse = f

    return call


def bench_mamba_inference(args: argparse.Namespace, machine: Machine) -> tuple[str, dict]:
    lengths = [1025] if args.quick else [1025, 4097]
    lines = [
        "### mamba_inference (fused CPU inference interior of Mamba / BiMamba)",
        "",
        "Vim-Ti mixers (d_model 192, E 384, N 16; 4097 tokens = Vim-Ti at 1024^2), batch 1, fp32, "
        "`torch.inference_mode()`. `fused`: conv, dt_proj, softplus, scan, skip and gate in native "
        "time-major passes over `in_proj`'s output (`kernels/selective_scan/fused.py`); "
        "`unfused`: the same module's autograd-path code (channel-first, torch softplus, flips, "
        "the training scan kernel). ms = median wall time; CPU ms = median process CPU time "
        "(robust to other processes' load); peak MiB = growth of peak RSS in a fresh process.",
        "",
        "| mixer | L | implementation | ms | CPU ms | x unfused | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    headline = {}
    for kind in ("BiMamba v2", "Mamba"):
        for length in lengths:
            results = {}
            for impl in ("unfused", "fused"):
                call = _mi_call(kind, impl, length)
                wall = median_time(call, args.repeats, args.budget)
                cpu = []
                for _ in range(args.repeats):
                    start = time.process_time()
                    call()
                    cpu.append(time.process_time() - start)
                memory = None
                if not args.no_memory:
                    memory = measure_memory_in_subprocess(
                        "mamba_inference", {"kind": kind, "impl": impl, "length": length}
                    )
                results[impl] = (wall, statistics.median(cpu), memory)
                print(f"  {kind} L={length} {impl}: {wall} ms", flush=True)
            for impl, (wall, cpu, memory) in results.items():
                ratio = results["unfused"][0].seconds / wall.seconds
                lines.append(
                    f"| {kind} | {length} | {impl} | {wall} | {cpu * 1e3:.1f} | {ratio:.1f}x | "
                    + ("n/a" if memory is None else f"{memory:.0f}")
                    + " |"
                )
                if impl == "fused" and kind == "BiMamba v2" and length == lengths[-1]:
                    headline = {"BiMamba fused speed-up": ratio}
    return "\n".join(lines), headline


def _mi_memory_call(case: dict):
    call = _mi_call(case["kind"], case["impl"], case["length"])
    tiny = _mi_call(case["kind"], case["impl"], 8)
    return (lambda: call()), (lambda: tiny())


# --------------------------------------------------------------------------- sections


@dataclass
class Section:
    run: Callable[[argparse.Namespace, Machine], tuple[str, dict]]
    # case -> (the fwd+bwd call to measure, a tiny warm-up call), for the memory subprocess
    memory_call: Callable[[dict], tuple[Callable[[], None], Callable[[], None]]]


SECTIONS: dict[str, Section] = {
    "selective_scan": Section(bench_selective_scan, _ss_memory_call),
    "ssd_scan": Section(bench_ssd_scan, _ssd_memory_call),
    "diag_scan": Section(bench_diag_scan, _diag_memory_call),
    "mamba_inference": Section(bench_mamba_inference, _mi_memory_call),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="first shape of each section only")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median), >= 5")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument(
        "--budget",
        type=float,
        default=30.0,
        help="seconds: a case whose warm-up call takes longer is reported from that one call",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        _memory_case(args.memory_case)
        return
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 (median of at least 5), got {args.repeats}")
    machine = measure_machine(args.repeats)
    print(machine.describe(), flush=True)
    # Sections not run now keep their block from the existing file (each block says how and when
    # it was measured), so a section can be re-run alone.
    blocks = _read_blocks(args.output)
    for name in args.sections:
        load = os.getloadavg()[0]
        table, headline = SECTIONS[name].run(args, machine)
        run_line = (
            f"Run: `ssmkit bench scan --sections {name}{' --quick' if args.quick else ''}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on {machine.describe()}; "
            f"torch {torch.__version__}, median of {args.repeats} repeats. Load from other "
            f"processes is not controlled (1-min load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end); every ratio compares runs of this section."
        )
        blocks[name] = f"{table}\n\n{run_line}\n"
        if headline:
            print(f"{name} headline: {headline}")
    parts = ["# Scan benchmark", ""]
    for name in [*SECTIONS, *(n for n in blocks if n not in SECTIONS)]:
        if name in blocks:
            parts += [f"{_MARKER}{name} -->", blocks[name].rstrip("\n"), ""]
    text = "\n".join(parts)
    print(text)
    write_text_atomic(args.output, text)


_MARKER = "<!-- section: "


def _read_blocks(path: Path) -> dict[str, str]:
    """The per-section blocks of an existing results file (empty if none or unmarked)."""
    if not path.exists():
        return {}
    blocks: dict[str, str] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith(_MARKER):
            name = line[len(_MARKER) :].removesuffix(" -->").strip()
            blocks[name] = ""
        elif name is not None:
            blocks[name] += line + "\n"
    return blocks


if __name__ == "__main__":
    main()
