"""selective_scan: every backend against the reference (outputs, last state, every gradient),
the reference against gradcheck and against running segments separately, and the dispatcher's
errors."""

from __future__ import annotations

import ctypes
import importlib
import os
import shutil
from collections.abc import Callable

import pytest
import torch

from ssmkit.kernels import _dispatch, selective_scan
from ssmkit.kernels._native_build import _build

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
# relative-RMS ratios per input dtype: (outputs and last state, gradients)
TOLERANCES = {torch.float32: (5e-3, 1e-2), torch.bfloat16: (1e-2, 3e-2)}


# the cpu backend with its native C kernel disabled, i.e. its vectorised torch path
CPU_TORCH = "cpu-torch"


def _backends() -> list:
    triton_mark = pytest.mark.skipif(
        not _dispatch.triton_available(), reason="triton is not installed"
    )
    return ["cpu", CPU_TORCH, pytest.param("triton", marks=[triton_mark, pytest.mark.triton])]


def _name(backend: str) -> str:
    return "cpu" if backend == CPU_TORCH else backend


@pytest.fixture(autouse=True)
def _cpu_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == CPU_TORCH:
        cpu = importlib.import_module("ssmkit.kernels.selective_scan.cpu")
        monkeypatch.setattr(cpu, "native_library", lambda: None)


def make_inputs(
    batch: int = 2,
    channels: int = 4,
    n_state: int = 4,
    length: int = 16,
    groups: int | None = 2,
    dtype: torch.dtype = torch.float32,
    decay: str = "normal",
) -> dict[str, torch.Tensor]:
    """Leaf tensors for every differentiable argument; groups=None gives shared (b, N, L) B/C."""
    a_scale = {"tiny": 1e-4, "normal": 1.0, "large": 50.0}[decay]
    bc_shape = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)
    tensors = {
        "u": torch.randn(batch, channels, length),
        "delta": torch.randn(batch, channels, length) * 0.5,
        "A": -(torch.rand(channels, n_state) + 0.5) * a_scale,
        "B": torch.randn(bc_shape),
        "C": torch.randn(bc_shape),
        "D": torch.randn(channels),
        "z": torch.randn(batch, channels, length),
        "delta_bias": torch.randn(channels) * 0.1,
        "initial_state": torch.randn(batch, channels, n_state),
    }
    out = {}
    for name, t in tensors.items():
        keep_fp32 = name in ("A", "D", "delta_bias", "initial_state")
        out[name] = t.to(torch.float32 if keep_fp32 else dtype).requires_grad_()
    return out


def run(
    inputs: dict[str, torch.Tensor], backend: str, **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """y, last state and the gradients of a fixed random loss on both w.r.t. every input."""
    y, last = selective_scan(
        inputs["u"],
        inputs["delta"],
        inputs["A"],
        inputs["B"],
        inputs["C"],
        inputs["D"],
        inputs["z"],
        inputs["delta_bias"],
        True,
        True,
        initial_state=inputs["initial_state"],
        backend=_name(backend),
        **kwargs,
    )
    generator = torch.Generator().manual_seed(1)
    dy = torch.randn(y.shape, generator=generator).to(y.dtype)
    dlast = torch.randn(last.shape, generator=generator)
    loss = (y.float() * dy.float()).sum() + (last * dlast).sum()
    grads = torch.autograd.grad(loss, [inputs[n] for n in GRAD_NAMES])
    return y, last, dict(zip(GRAD_NAMES, grads))


def check_against_reference(
    assert_close: Callable[..., None], inputs: dict[str, torch.Tensor], backend: str, **kwargs
) -> None:
    ratio_out, ratio_grad = TOLERANCES[inputs["u"].dtype]
    y_ref, last_ref, grads_ref = run(inputs, "ref", **kwargs)
    y, last, grads = run(inputs, backend, **kwargs)
    assert y.dtype == inputs["u"].dtype and last.dtype == torch.float32
    assert_close(f"{backend} y", y_ref, y, ratio_out)
    assert_close(f"{backend} last_state", last_ref, last, ratio_out)
    for name in GRAD_NAMES:
        assert_close(f"{backend} d{name}", grads_ref[name], grads[name], ratio_grad)


def resets_at(batch: int, length: int, *steps: int) -> torch.Tensor:
    resets = torch.zeros(batch, length, dtype=torch.bool)
    for t in steps:
        resets[:, t] = True
    return resets


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("length", [1, 2, 63, 1000])
def test_matches_reference_all_lengths(
    backend: str, length: int, assert_close: Callable[..., None]
) -> None:
    if backend == "triton" and length > 63:
        pytest.skip("the Triton interpreter is too slow for L=1000; ref/cpu cover it")
    # N = 16 also runs the native kernel's specialised copy
    batch, channels, n_state = (1, 4, 4) if backend == "triton" else (2, 8, 16)
    inputs = make_inputs(batch, channels, n_state, length, groups=2)
    check_against_reference(assert_close, inputs, backend)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("decay", ["tiny", "large"])
def test_decays_tiny_and_large(backend: str, decay: str, assert_close: Callable[..., None]) -> None:
    inputs = make_inputs(1, 4, 4, 40, groups=None, decay=decay)
    check_against_reference(assert_close, inputs, backend)


@pytest.mark.parametrize("backend", _backends())
def test_bf16_inputs(backend: str, assert_close: Callable[..., None]) -> None:
    inputs = make_inputs(1, 4, 4, 33, groups=2, dtype=torch.bfloat16)
    check_against_reference(assert_close, inputs, backend)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("reverse", [False, True])
def test_resets_and_reverse(backend: str, reverse: bool, assert_close: Callable[..., None]) -> None:
    inputs = make_inputs(1, 4, 4, 37, groups=4)
    resets = resets_at(1, 37, 0, 20, 36)
    check_against_reference(assert_close, inputs, backend, resets=resets, reverse=reverse)


@pytest.mark.parametrize("backend", _backends())
def test_fast_backends_write_every_buffer(
    backend: str, nan_poison: None, assert_close: Callable[..., None]
) -> None:
    inputs = make_inputs(1, 6, 5, 21, groups=3)  # odd sizes leave masked lanes in every block
    check_against_reference(assert_close, inputs, backend, resets=resets_at(1, 21, 7))


@pytest.mark.parametrize("backend", ["ref", "cpu", CPU_TORCH])
def test_reset_equals_running_segments_separately(backend: str) -> None:
    inputs = make_inputs(2, 4, 3, 30, groups=None)
    u, delta, A, B, C = (inputs[n].detach() for n in ("u", "delta", "A", "B", "C"))
    h0 = inputs["initial_state"].detach()

    def scan(lo: int, hi: int, **kw: object) -> tuple[torch.Tensor, torch.Tensor]:
        return selective_scan(
            u[..., lo:hi], delta[..., lo:hi], A, B[..., lo:hi], C[..., lo:hi],
            delta_softplus=True, return_last_state=True, backend=_name(backend), **kw,
        )  # fmt: skip

    y, last = scan(0, 30, initial_state=h0, resets=resets_at(2, 30, 12))
    y1, _ = scan(0, 12, initial_state=h0)
    y2, last2 = scan(12, 30)
    torch.testing.assert_close(y, torch.cat([y1, y2], dim=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, last2, rtol=1e-5, atol=1e-5)

    # a reset at t = 0 ignores the initial state entirely
    y0 = scan(0, 30, initial_state=h0, resets=resets_at(2, 30, 0))[0]
    torch.testing.assert_close(y0, scan(0, 30)[0], rtol=1e-6, atol=1e-6)


def test_reverse_is_the_flipped_forward_scan() -> None:
    inputs = {k: v.detach() for k, v in make_inputs(2, 4, 3, 25).items()}
    u, delta, A, B, C, D, z = (inputs[n] for n in ("u", "delta", "A", "B", "C", "D", "z"))
    resets = resets_at(2, 25, 3, 17)
    y = selective_scan(u, delta, A, B, C, D, z, reverse=True, resets=resets, backend="ref")
    flipped = selective_scan(
        *(t.flip(-1) for t in (u, delta)), A, *(t.flip(-1) for t in (B, C)), D, z.flip(-1),
        resets=resets.flip(-1), backend="ref",
    )  # fmt: skip
    torch.testing.assert_close(y, flipped.flip(-1))


@pytest.mark.parametrize("backend", ["ref", "cpu", CPU_TORCH])
def test_grouped_with_equal_groups_equals_shared(backend: str) -> None:
    inputs = {k: v.detach() for k, v in make_inputs(2, 6, 4, 19, groups=None).items()}
    u, delta, A, B, C = (inputs[n] for n in ("u", "delta", "A", "B", "C"))
    backend = _name(backend)
    shared = selective_scan(u, delta, A, B, C, backend=backend)
    grouped = selective_scan(
        u, delta, A, B[:, None].expand(2, 3, 4, 19), C[:, None].expand(2, 3, 4, 19),
        backend=backend,
    )  # fmt: skip
    torch.testing.assert_close(grouped, shared)
    # and the groups really are separate: changing group 1's B changes channels 2..3 only
    B2 = B[:, None].repeat(1, 3, 1, 1)
    B2[:, 1] += 1.0
    changed = selective_scan(u, delta, A, B2, C[:, None].expand(2, 3, 4, 19), backend=backend)
    assert torch.equal(changed[:, :2], grouped[:, :2]) and torch.equal(
        changed[:, 4:], grouped[:, 4:]
    )
    assert not torch.allclose(changed[:, 2:4], grouped[:, 2:4])


def test_reference_gradcheck_float64() -> None:
    inputs = make_inputs(1, 2, 2, 5, groups=2)
    args = [inputs[n].detach().double().requires_grad_() for n in GRAD_NAMES]
    resets = resets_at(1, 5, 3)

    def fn(*a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, delta, A, B, C, D, z, bias, h0 = a
        return selective_scan(
            u, delta, A, B, C, D, z, bias, True, True,
            initial_state=h0, resets=resets, reverse=True, backend="ref",
        )  # fmt: skip

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)


def test_non_contiguous_inputs_and_inputs_untouched(assert_close: Callable[..., None]) -> None:
    inputs = {k: v.detach() for k, v in make_inputs(2, 4, 3, 17, groups=None).items()}
    u_t = inputs["u"].transpose(1, 2).contiguous().transpose(1, 2)  # (b, E, L) view, stride 1 on E
    B_t = inputs["B"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not u_t.is_contiguous() and not B_t.is_contiguous()
    before = [t.clone() for t in (u_t, B_t)]
    for backend in ("ref", "cpu"):
        y = selective_scan(u_t, inputs["delta"], inputs["A"], B_t, inputs["C"], backend=backend)
        y_ref = selective_scan(
            inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], backend="ref"
        )
        assert_close(f"{backend} non-contiguous", y_ref, y)
    assert all(torch.equal(a, b) for a, b in zip(before, (u_t, B_t)))


def test_bad_inputs_raise_clear_errors() -> None:
    x = {k: v.detach() for k, v in make_inputs(2, 4, 3, 8, groups=None).items()}
    u, delta, A, B, C = (x[n] for n in ("u", "delta", "A", "B", "C"))
    with pytest.raises(ValueError, match=r"u must be \(B, E, L\)"):
        selective_scan(u[0], delta, A, B, C)
    with pytest.raises(ValueError, match="delta must have shape"):
        selective_scan(u, delta[..., :5], A, B, C)
    with pytest.raises(ValueError, match="does not match u's batch"):
        selective_scan(u, delta, A, B[..., :5], C)
    with pytest.raises(ValueError, match="G=3 groups, which must divide the 4 channels"):
        selective_scan(u, delta, A, B[:, None].expand(2, 3, 3, 8), C)
    with pytest.raises(ValueError, match="state size N=2 but A has N=3"):
        selective_scan(u, delta, A, B, C[:, :2])
    with pytest.raises(TypeError, match="u must be a real floating tensor"):
        selective_scan(u.long(), delta, A, B, C)
    with pytest.raises(TypeError, match="resets must be a bool tensor"):
        selective_scan(u, delta, A, B, C, resets=torch.zeros(2, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        selective_scan(u, delta, A, B, C, initial_state=torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        selective_scan(u, delta, A, B, C, backend="cuda")


def test_env_override_selects_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    x = {k: v.detach() for k, v in make_inputs(1, 4, 3, 6, groups=None).items()}
    module = importlib.import_module("ssmkit.kernels.selective_scan.reference")
    calls = []
    real = module.selective_scan_reference

    def spy(*a: object, **k: object) -> torch.Tensor:
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, "selective_scan_reference", spy)
    selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"])
    assert calls == []  # auto on CPU tensors is the cpu backend
    monkeypatch.setenv("SSMKIT_BACKEND", "ref")
    selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"])
    assert calls == [1]


def test_unavailable_triton_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    x = {k: v.detach() for k, v in make_inputs(1, 4, 3, 6, groups=None).items()}
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    monkeypatch.setattr(_dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"pip install \"ssmkit\[triton\]\""):
        selective_scan(*args, backend="triton")
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        selective_scan(*args, backend="triton")


@pytest.mark.skipif(
    (shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None)
    or os.environ.get("SSMKIT_NATIVE", "1") == "0",
    reason="no C compiler or SSMKIT_NATIVE=0: the cpu backend then runs its torch path (tested "
    "as cpu-torch)",
)
def test_native_kernel_builds_and_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    native = importlib.import_module("ssmkit.kernels.selective_scan.native")
    assert native.native_library() is not None
    calls = []
    real = native.NativeSelectiveScan.apply

    def spy(*a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return real(*a)

    cpu = importlib.import_module("ssmkit.kernels.selective_scan.cpu")
    monkeypatch.setattr(cpu.NativeSelectiveScan, "apply", spy)
    x = {k: v.detach() for k, v in make_inputs(1, 4, 3, 6, groups=None).items()}
    selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="cpu")
    assert calls == [1]
    # float64 runs the torch path (the native kernel is fp32 only)
    selective_scan(*(x[n].double() for n in ("u", "delta", "A", "B", "C")), backend="cpu")
    assert calls == [1]


@pytest.mark.parametrize("bias,softplus", [(True, True), (False, True), (True, False)])
def test_native_kernel_fuses_delta_bias_and_softplus(
    bias: bool, softplus: bool, monkeypatch: pytest.MonkeyPatch, assert_close: Callable[..., None]
) -> None:
    """The cpu backend's native kernel applies delta_bias and softplus itself (forward and chain
    rule): outputs and every gradient match the reference across the softplus range, including
    the threshold (x > 20 passes through) and large |delta| either side."""
    cpu = importlib.import_module("ssmkit.kernels.selective_scan.cpu")
    native = importlib.import_module("ssmkit.kernels.selective_scan.native")
    if native.native_library() is None:
        pytest.skip("no C compiler: the native kernel is not built")
    seen = []
    real = cpu.NativeSelectiveScan.apply

    def spy(*a: object) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((a[7] is not None, a[8]))
        return real(*a)

    monkeypatch.setattr(cpu.NativeSelectiveScan, "apply", spy)
    inputs = make_inputs(2, 8, 16, 70, groups=2)
    special = torch.tensor([19.9, 20.0, 20.1, 25.0, -30.0, -90.0, 60.0, 1e-3])
    with torch.no_grad():
        inputs["delta"][:, :, :8] = special
        inputs["delta"][0, 3] = torch.linspace(-40.0, 40.0, 70)
        inputs["delta_bias"][1] = 20.0 - special[1]  # lands exactly on the threshold
        if not softplus:  # raw step sizes must stay positive (a negative one grows the state)
            inputs["delta"].abs_()
            inputs["delta_bias"].abs_()
    outs = {}
    for backend in ("ref", "cpu"):
        y, last = selective_scan(
            inputs["u"],
            inputs["delta"],
            inputs["A"],
            inputs["B"],
            inputs["C"],
            inputs["D"],
            inputs["z"],
            inputs["delta_bias"] if bias else None,
            softplus,
            True,
            backend=backend,
        )
        generator = torch.Generator().manual_seed(1)
        loss = (y * torch.randn(y.shape, generator=generator)).sum() + last.sum()
        names = [
            n for n in ("u", "delta", "A", "B", "C", "delta_bias") if bias or n != "delta_bias"
        ]
        grads = torch.autograd.grad(loss, [inputs[n] for n in names])
        outs[backend] = (y, last, dict(zip(names, grads)))
    assert seen == [(bias, softplus)]
    (y_ref, last_ref, g_ref), (y, last, g) = outs["ref"], outs["cpu"]
    assert_close("y", y_ref, y, 1e-4)
    assert_close("last", last_ref, last, 1e-4)
    for name in g_ref:
        assert_close(f"d{name}", g_ref[name], g[name], 1e-4)


def test_cpu_forward_without_grad_matches(
    nan_poison: None, assert_close: Callable[..., None]
) -> None:
    """Under no_grad the native kernel keeps no chunk states: same outputs as the reference."""
    x = {k: v.detach() for k, v in make_inputs(2, 8, 16, 150, groups=2).items()}
    args = [x[n] for n in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    with torch.no_grad():
        y_ref, last_ref = selective_scan(*args, True, True, backend="ref")
        y, last = selective_scan(*args, True, True, backend="cpu")
    assert_close("y", y_ref, y, 1e-4)
    assert_close("last", last_ref, last, 1e-4)


def test_native_kernel_without_openmp_matches(
    monkeypatch: pytest.MonkeyPatch, assert_close: Callable[..., None]
) -> None:
    """Built without OpenMP, the native kernel splits channels over Python threads instead: same
    outputs and gradients."""
    _use_kernel_without_openmp(_native_or_skip(), monkeypatch)
    check_against_reference(assert_close, make_inputs(2, 8, 16, 70, groups=2), "cpu")


def _native_or_skip() -> object:
    native = importlib.import_module("ssmkit.kernels.selective_scan.native")
    if native.native_library() is None:
        pytest.skip("no C compiler: the native kernel is not built")
    return native


def _use_kernel_without_openmp(native: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the kernel without OpenMP (channels then split over Python threads) and use it."""
    library = _build(
        native._SOURCE,
        native._NAMES,
        "selective_scan",
        (["-O3", "-fopenmp-simd", "-fno-math-errno"],),
    )
    library.ss_openmp.restype = ctypes.c_int64
    assert not library.ss_openmp()
    cpu = importlib.import_module("ssmkit.kernels.selective_scan.cpu")
    monkeypatch.setattr(native, "native_library", lambda: library)
    monkeypatch.setattr(cpu, "native_library", lambda: library)


def _shell_case(
    n_state: int, with_d: bool, with_z: bool, z_time_major: bool, channels: int = 6
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Inputs at an odd length (not a multiple of the 64-step chunk), grouped B/C (3 groups); z
    either a transposed view of a (b, L, E) tensor (as Mamba's in_proj gives it) or contiguous.
    ``channels=48`` (16 per group) with N = 16 runs the channel-vectorised kernel."""
    inputs = make_inputs(2, channels, n_state, 133, groups=3)
    if z_time_major:
        inputs["z"] = inputs["z"].detach().transpose(1, 2).contiguous().requires_grad_()
    names = [n for n in GRAD_NAMES if (with_d or n != "D") and (with_z or n != "z")]
    return inputs, names


def _run_shell(
    inputs: dict[str, torch.Tensor],
    names: list[str],
    backend: str,
    z_time_major: bool,
    **kwargs: object,
) -> list[torch.Tensor]:
    z = inputs["z"]
    if z_time_major:
        z = z.transpose(1, 2)  # (b, E, L) view with stride 1 on E
        assert not z.is_contiguous()
    y, last = selective_scan(
        inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
        inputs["D"] if "D" in names else None, z if "z" in names else None,
        inputs["delta_bias"], True, True, initial_state=inputs["initial_state"],
        backend=backend, **kwargs,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    # time-major: y feeds the loss as (b, L, E), as it feeds out_proj, so dy is a transposed view
    y_used = y.transpose(1, 2) if z_time_major else y
    loss = (y_used * torch.randn(y_used.shape, generator=generator)).sum()
    loss = loss + (last * torch.randn(last.shape, generator=generator)).sum()
    return [y, last, *torch.autograd.grad(loss, [inputs[n] for n in names])]


@pytest.mark.parametrize("n_state,channels", [(16, 6), (5, 6), (16, 48)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "with_d,with_z", [(True, True), (True, False), (False, True), (False, False)]
)
def test_native_kernel_fuses_skip_gate_and_reverse(
    n_state: int,
    channels: int,
    reverse: bool,
    with_d: bool,
    with_z: bool,
    monkeypatch: pytest.MonkeyPatch,
    assert_close: Callable[..., None],
) -> None:
    """The native kernel applies D, the z gate and reverse itself (no torch shell, no flips):
    outputs, last state and every gradient (u, delta, A, B, C, D, z, delta_bias, initial state)
    match the flip-based reference, with resets (incl. at both ends), for N = 16 (specialised
    copy) and N = 5, z contiguous or read through a transposed view; 48 channels with N = 16 take
    the channel-vectorised kernel (blocks of 16 channels)."""
    _native_or_skip()
    cpu = importlib.import_module("ssmkit.kernels.selective_scan.cpu")
    seen = []
    real = cpu.NativeSelectiveScan.apply

    def spy(*a: object) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((a[9] is not None, a[10] is not None, a[11]))
        return real(*a)

    monkeypatch.setattr(cpu.NativeSelectiveScan, "apply", spy)
    # the torch shell must not run: no flips at all on the native path
    flips = []
    real_flip = torch.Tensor.flip
    monkeypatch.setattr(torch.Tensor, "flip", lambda t, *d: flips.append(1) or real_flip(t, *d))
    z_time_major = n_state == 16
    inputs, names = _shell_case(n_state, with_d, with_z, z_time_major, channels)
    resets = resets_at(2, 133, 0, 50, 64, 132)
    out = _run_shell(inputs, names, "cpu", z_time_major, reverse=reverse, resets=resets)
    assert seen == [(with_d, with_z, reverse)] and flips == []
    monkeypatch.setattr(torch.Tensor, "flip", real_flip)
    ref = _run_shell(inputs, names, "ref", z_time_major, reverse=reverse, resets=resets)
    for name, a, b in zip(["y", "last_state", *names], ref, out):
        assert_close(f"d{name}" if name not in ("y", "last_state") else name, a, b, 1e-4)
    if with_z:  # dz comes back in z's layout, so it reaches a (b, L, E) projection uncopied
        dz = out[2 + names.index("z")]
        assert dz.is_contiguous()  # the leaf is (b, L, E) when z is time-major


@pytest.mark.parametrize("openmp,n_threads", [(True, 2), (False, 2), (True, 1)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("channels", [6, 48])
def test_native_kernel_threads_match_with_and_without_openmp(
    openmp: bool,
    n_threads: int,
    reverse: bool,
    channels: int,
    monkeypatch: pytest.MonkeyPatch,
    assert_close: Callable[..., None],
) -> None:
    """The channel split over 2 threads (OpenMP, or Python threads when built without OpenMP)
    with D, z, reverse and resets matches the reference, and so does one thread. With 48
    channels in one group (N = 16) the vectorised kernel takes whole blocks of 16 and the
    per-channel loop the rest: 3 x 48 = 144 channels split at 72, so each thread's range has
    ragged edges; the three blocks of a batch row sum their per-lane B / C gradients before one
    sum across lanes."""
    native = _native_or_skip()
    if not openmp:
        _use_kernel_without_openmp(native, monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        if channels == 6:
            inputs, names = _shell_case(16, True, True, True)
        else:
            inputs = make_inputs(3, channels, 16, 133, groups=None)
            inputs["z"] = inputs["z"].detach().transpose(1, 2).contiguous().requires_grad_()
            names = list(GRAD_NAMES)
        batch = inputs["u"].shape[0]
        kwargs = {"reverse": reverse, "resets": resets_at(batch, 133, 3, 90)}
        out = _run_shell(inputs, names, "cpu", True, **kwargs)
        ref = _run_shell(inputs, names, "ref", True, **kwargs)
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(["y", "last_state", *names], ref, out):
        assert_close(name, a, b, 1e-4)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("channels", [40, 64])
def test_native_kernel_no_grad_with_skip_gate_reverse(
    reverse: bool, channels: int, nan_poison: None, assert_close: Callable[..., None]
) -> None:
    """Under no_grad (no chunk states kept) the fused D / z / reverse output matches (40
    channels in 2 groups: the per-channel loop; 64 in 2 groups: the vectorised blocks)."""
    _native_or_skip()
    x = {k: v.detach() for k, v in make_inputs(2, channels, 16, 99, groups=2).items()}
    args = [x[n] for n in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    kwargs = {"reverse": reverse, "resets": resets_at(2, 99, 10)}
    with torch.no_grad():
        y_ref, last_ref = selective_scan(*args, True, True, backend="ref", **kwargs)
        y, last = selective_scan(*args, True, True, backend="cpu", **kwargs)
    assert_close("y", y_ref, y, 1e-4)
    assert_close("last", last_ref, last, 1e-4)


def test_scan_with_core_gate_needs_fused_delta() -> None:
    common = importlib.import_module("ssmkit.kernels.selective_scan.common")
    x = {k: v.detach() for k, v in make_inputs(1, 4, 3, 6, groups=None).items()}
    with pytest.raises(ValueError, match="fuses_gate=True needs fuses_delta=True"):
        common.scan_with_core(
            lambda *a: None, x["u"], x["delta"], x["A"], x["B"], x["C"], fuses_gate=True
        )
