"""ResidualBlock, SequenceBackbone (state / step / checkpointing / compile), param_groups, AMP."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from ssmkit.core import (
    Mamba,
    ResidualBlock,
    RMSNorm,
    SequenceBackbone,
    StackState,
    param_groups,
)
from ssmkit.core.residual import DropPath

D_MODEL = 16
MIXERS = {
    "mamba": {"d_state": 4},
    "mamba2": {"d_state": 8, "headdim": 8, "chunk_size": 4},
}


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= tol * (1 + b.abs().max().item()), f"max abs error {err:.3e}"


def _stack(mixer: str = "mamba", n_layers: int = 2, **kwargs: object) -> SequenceBackbone:
    return SequenceBackbone(D_MODEL, n_layers, mixer=mixer, mixer_kwargs=MIXERS[mixer], **kwargs)  # type: ignore[arg-type]


def test_residual_block_adds_then_norms_and_keeps_the_residual_in_fp32() -> None:
    block = ResidualBlock(D_MODEL, Mamba(D_MODEL, d_state=4))
    h, r = torch.randn(2, 5, D_MODEL).bfloat16(), torch.randn(2, 5, D_MODEL)
    block = block.bfloat16()
    out, residual = block(h, r)
    assert residual.dtype == torch.float32
    _close(residual, h.float() + r)
    _close(out.float(), block.mixer(block.norm(residual.bfloat16())).float())
    out0, residual0 = block(h)
    assert torch.equal(residual0, h.float())
    layer = ResidualBlock(D_MODEL, Mamba(D_MODEL, d_state=4), norm="layer")
    assert isinstance(layer.norm, nn.LayerNorm)
    with pytest.raises(ValueError, match="out_features"):
        from ssmkit.core import BiMamba

        ResidualBlock(D_MODEL, BiMamba(D_MODEL, variant="separate", merge="concat", d_state=4))


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    dp = DropPath(0.5).train()
    x = torch.ones(400, 3, 2)
    y = dp(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert 100 < (per_sample[:, 0] == 0).sum() < 300
    assert torch.equal(dp.eval()(x), x)
    rates = [layer.drop_path.p for layer in _stack(n_layers=3, drop_path=0.2).layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


def test_out_proj_init_is_rescaled_by_depth() -> None:
    torch.manual_seed(0)
    deep = SequenceBackbone(64, 16, mixer_kwargs={"d_state": 4})
    bound = math.sqrt(6 / ((1 + 5) * 128)) / math.sqrt(16)  # kaiming_uniform(a=sqrt(5)) / sqrt(n)
    w = deep.layers[0].mixer.out_proj.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_stack_step_equals_forward_and_state_continues(mixer: str) -> None:
    m = _stack(mixer, n_layers=3)
    x = torch.randn(2, 10, D_MODEL)
    y, final = m(x, return_state=True)
    assert isinstance(final, StackState) and len(final.layers) == 3
    state, outs = m.init_state(2), []
    for t in range(10):
        y_t, state = m.step(x[:, t], state)
        outs.append(y_t)
    _close(torch.stack(outs, 1), y)
    y1, s1 = m(x[:, :4], return_state=True)
    y2, s2 = m(x[:, 4:], state=s1, return_state=True)
    _close(torch.cat([y1, y2], 1), y)
    _close(s2.layers[-1].ssm, final.layers[-1].ssm)
    sub = final.index([1])
    assert sub.batch_size == 1 and torch.equal(sub.layers[0].ssm[0], final.layers[0].ssm[1])
    assert sub.to("cpu").layers[2].conv.shape == final.layers[2].conv[:1].shape


def test_stack_mask_and_resets() -> None:
    m = _stack()
    x = torch.randn(2, 9, D_MODEL)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    y = m(x, mask=mask)
    _close(y[1, :6], m(x[1:, :6])[0])
    resets = torch.zeros(2, 9, dtype=torch.bool)
    resets[:, 4] = True
    yr = m(x, resets=resets)
    _close(yr[:, 4:], m(x[:, 4:]))


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_gradient_checkpointing_gives_identical_gradients(mixer: str) -> None:
    m = _stack(mixer)
    x = torch.randn(2, 8, D_MODEL, requires_grad=True)
    grads = []
    for flag in (False, True):
        m.set_grad_checkpointing(flag)
        m.zero_grad()
        x.grad = None
        m(x).square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
    for p in m.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_mixer_by_callable_and_bad_arguments() -> None:
    m = SequenceBackbone(D_MODEL, 2, mixer=lambda i: Mamba(D_MODEL, d_state=2, layer_idx=i))
    assert [layer.mixer.layer_idx for layer in m.layers] == [0, 1]
    assert _stack().layers[1].mixer.layer_idx == 1
    with pytest.raises(ValueError, match="mixer must be one of"):
        SequenceBackbone(D_MODEL, 2, mixer="transformer")
    with pytest.raises(ValueError, match="norm"):
        SequenceBackbone(D_MODEL, 2, norm="batch")
    with pytest.raises(ValueError, match="n_layers"):
        SequenceBackbone(D_MODEL, 0)
    m = _stack()
    with pytest.raises(ValueError, match=r"\(B, L, D=16\)"):
        m(torch.randn(2, 4, 8))
    with pytest.raises(TypeError, match="StackState"):
        m.step(torch.randn(2, D_MODEL), m.init_state(2).layers)
    with pytest.raises(ValueError, match="layers"):
        m(torch.randn(2, 4, D_MODEL), state=StackState(layers=[None]))


def test_param_groups_honour_no_weight_decay() -> None:
    m = _stack("mamba2")
    groups = param_groups(m, 0.1)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    mixer = m.layers[0].mixer
    for p in (mixer.A_log, mixer.D, mixer.dt_bias, mixer.conv1d.bias, mixer.norm.weight):
        assert id(p) in no_decay
    for p in (mixer.in_proj.weight, mixer.out_proj.weight, mixer.conv1d.weight):
        assert id(p) in decay
    assert len(decay) + len(no_decay) == sum(1 for _ in m.parameters())
    # the flag wins even on a matrix; decay_1d decays unflagged vectors; timm's no_weight_decay()
    m1 = Mamba(8, d_state=2)
    assert id(m1.A_log) in {id(p) for p in param_groups(m1, 0.1, decay_1d=True)[1]["params"]}
    assert id(m1.conv1d.bias) in {id(p) for p in param_groups(m1, 0.1, decay_1d=True)[0]["params"]}
    m1.no_weight_decay = lambda: {"in_proj.weight"}  # type: ignore[method-assign]
    assert id(m1.in_proj.weight) in {id(p) for p in param_groups(m1, 0.1)[1]["params"]}
    m1.out_proj.weight.requires_grad_(False)
    assert all(p is not m1.out_proj.weight for g in param_groups(m1, 0.1) for p in g["params"])
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(m1, -1.0)
    torch.optim.AdamW(param_groups(m, 0.1), lr=1e-3)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny ops run fastest single-threaded (and do not fight other test processes for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_four_layer_stack_trains_200_steps_under_bf16_autocast_without_nan(
    one_thread: object,
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        SequenceBackbone(D_MODEL, 4, mixer_kwargs={"d_state": 4}), nn.Linear(D_MODEL, 1)
    )
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=3e-3)
    x = torch.randn(2, 16, D_MODEL)
    target = torch.randn(2, 16, 1)
    losses = []
    for _ in range(200):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (model(x).float() - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert math.isfinite(losses[-1])
    mixer = model[0].layers[0].mixer
    for p in (mixer.A_log, mixer.D, mixer.dt_proj.bias):
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
        assert torch.isfinite(p).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert min(losses[-10:]) < 0.7 * losses[0]  # it actually trains


def test_fp16_autocast_forward_backward_is_finite() -> None:
    m = _stack("mamba2")
    with torch.autocast("cpu", dtype=torch.float16):
        y = m(torch.randn(2, 8, D_MODEL) * 10)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_rmsnorm_stack_final_norm_off() -> None:
    m = _stack(final_norm=False)
    assert m.norm_f is None
    m2 = _stack()
    assert isinstance(m2.norm_f, RMSNorm)
    assert m(torch.randn(1, 3, D_MODEL)).shape == (1, 3, D_MODEL)


@pytest.mark.parametrize(
    "backend",
    [
        "aot_eager",
        pytest.param(
            "inductor",
            marks=pytest.mark.skipif(
                not (torch.cuda.is_available() or os.environ.get("SSMKIT_TEST_INDUCTOR") == "1"),
                reason="inductor's C++ code generation takes minutes on a 2-core CPU; runs on GPU "
                "machines or with SSMKIT_TEST_INDUCTOR=1",
            ),
        ),
    ],
)
def test_torch_compile_matches_eager(backend: str) -> None:
    """The scans are ``torch.compiler.disable``d (graph breaks, see ``core/mamba.py``): the rest of
    the stack is traced by Dynamo + AOTAutograd and must match eager, gradients too."""
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m = _stack(n_layers=2).to(device)
    x = torch.randn(2, 12, D_MODEL, device=device)
    y_eager = m(x)
    y_eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    compiled = torch.compile(m, backend=backend)
    y = compiled(x)
    y.square().sum().backward()
    _close(y, y_eager, 1e-5)
    for a, b in zip((p.grad for p in m.parameters()), eager_grads, strict=True):
        _close(a, b, 1e-4)


@pytest.mark.parametrize("mixer", ["s4d", "s5", "bimamba"])
def test_stack_builds_every_named_mixer(mixer: str) -> None:
    m = SequenceBackbone(D_MODEL, 2, mixer=mixer, mixer_kwargs={"d_state": 4})
    x = torch.randn(2, 7, D_MODEL)
    y = m(x)
    assert y.shape == (2, 7, D_MODEL) and torch.isfinite(y).all()
    if mixer == "bimamba":
        with pytest.raises(TypeError, match="bidirectional"):
            m.init_state(2)
        return
    state, outs = m.init_state(2), []
    for t in range(7):
        y_t, state = m.step(x[:, t], state)
        outs.append(y_t)
    _close(torch.stack(outs, 1), y)
