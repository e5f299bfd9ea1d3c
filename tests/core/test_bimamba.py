"""BiMamba: every variant and merge, non-causality, flip equivariance, masks, resets, errors."""

from __future__ import annotations

import pytest
import torch

from ssmkit.core import BiMamba, Mamba
from ssmkit.core.bimamba import reverse_resets

D_MODEL = 16
CASES = [(v, m) for v in ("v2", "v1", "separate") for m in ("mean", "add", "concat")]


def _model(variant: str = "v2", merge: str = "mean") -> BiMamba:
    return BiMamba(D_MODEL, variant=variant, merge=merge, d_state=4)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= tol * (1 + b.abs().max().item()), f"max abs error {err:.3e}"


@pytest.mark.parametrize(("variant", "merge"), CASES)
def test_shapes_and_every_parameter_gets_a_gradient(variant: str, merge: str) -> None:
    m = _model(variant, merge)
    y = m(torch.randn(2, 9, D_MODEL))
    width = 2 * D_MODEL if (variant, merge) == ("separate", "concat") else D_MODEL
    assert y.shape == (2, 9, width) and m.out_features == width
    y.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_v2_parameter_names_match_vim() -> None:
    names = {n for n, _ in _model("v2").named_parameters()}
    assert names == {
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "x_proj.weight",
        "dt_proj.weight",
        "dt_proj.bias",
        "A_log",
        "D",
        "conv1d_b.weight",
        "conv1d_b.bias",
        "x_proj_b.weight",
        "dt_proj_b.weight",
        "dt_proj_b.bias",
        "A_b_log",
        "D_b",
        "out_proj.weight",
    }
    assert {n for n, _ in _model("v1").named_parameters()} == {
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "x_proj.weight",
        "dt_proj.weight",
        "dt_proj.bias",
        "A_log",
        "A_b_log",
        "D",
        "out_proj.weight",
    }


@pytest.mark.parametrize("variant", ["v2", "v1", "separate"])
def test_differs_from_unidirectional_and_sees_the_future(variant: str) -> None:
    bi = _model(variant, "mean")
    uni = Mamba(D_MODEL, d_state=4)
    if variant == "separate":
        uni.load_state_dict(bi.mamba_fwd.state_dict())
    else:
        uni.load_state_dict({k: v for k, v in bi.state_dict().items() if k in uni.state_dict()})
    x = torch.randn(1, 10, D_MODEL)
    assert (bi(x) - uni(x)).abs().max() > 1e-4
    future = x.clone()
    future[:, -1] += 1.0
    assert (bi(future)[:, 0] - bi(x)[:, 0]).abs().max() > 1e-6  # non-causal
    _close(uni(future)[:, :-1], uni(x)[:, :-1])  # causal


def _swap_directions(m: BiMamba) -> BiMamba:
    swapped = _model(m.variant, m.merge)
    sd = dict(m.state_dict())
    if m.variant == "separate":
        sd = {
            k.replace("mamba_fwd", "TMP")
            .replace("mamba_bwd", "mamba_fwd")
            .replace("TMP", "mamba_bwd"): v
            for k, v in sd.items()
        }
    else:
        pairs = [("A_log", "A_b_log")]
        if m.variant == "v2":
            pairs += [("D", "D_b")] + [
                (f"{p}.{w}", f"{p}_b.{w}")
                for p in ("conv1d", "x_proj", "dt_proj")
                for w in ("weight", "bias")
                if f"{p}.{w}" in sd
            ]
        for a, b in pairs:
            sd[a], sd[b] = sd[b], sd[a]
        if m.merge == "concat":
            w = sd["out_proj.weight"]
            sd["out_proj.weight"] = torch.cat(w.chunk(2, dim=1)[::-1], dim=1)
    swapped.load_state_dict(sd)
    return swapped


@pytest.mark.parametrize(("variant", "merge"), CASES)
def test_flip_equivariance(variant: str, merge: str) -> None:
    m = _model(variant, merge)
    x = torch.randn(2, 9, D_MODEL)
    y = m(x)
    y_flip = _swap_directions(m)(x.flip(1)).flip(1)
    if (variant, merge) == ("separate", "concat"):
        y_flip = torch.cat(y_flip.chunk(2, dim=-1)[::-1], dim=-1)
    _close(y_flip, y)


@pytest.mark.parametrize("variant", ["v2", "separate"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_mask_equals_running_the_unpadded_sequences(variant: str, side: str) -> None:
    m = _model(variant, "add")
    lengths, total = [8, 3], 10
    seqs = [torch.randn(1, n, D_MODEL) for n in lengths]
    x = torch.randn(2, total, D_MODEL) * 100
    mask = torch.zeros(2, total, dtype=torch.bool)
    for b, n in enumerate(lengths):
        sl = slice(0, n) if side == "right" else slice(total - n, total)
        x[b, sl] = seqs[b][0]
        mask[b, sl] = True
    y = m(x, mask=mask)
    for b in range(2):
        _close(y[b][mask[b]], m(seqs[b])[0])


def test_resets_equal_running_episodes_separately() -> None:
    m = _model("v2")
    x = torch.randn(1, 12, D_MODEL)
    resets = torch.zeros(1, 12, dtype=torch.bool)
    resets[0, 5] = True
    y = m(x, resets=resets)
    _close(y[:, :5], m(x[:, :5]))
    _close(y[:, 5:], m(x[:, 5:]))
    assert reverse_resets(resets).flip(1)[0].nonzero().flatten().tolist() == [4]


def test_no_recurrence_and_bad_arguments_raise() -> None:
    m = _model()
    with pytest.raises(TypeError, match="bidirectional"):
        m.step(torch.randn(2, D_MODEL), None)
    with pytest.raises(TypeError, match="bidirectional"):
        m.init_state(2)
    with pytest.raises(ValueError, match="non-causal"):
        m(torch.randn(2, 5, D_MODEL), return_state=True)
    with pytest.raises(ValueError, match="variant"):
        BiMamba(D_MODEL, variant="v3")
    with pytest.raises(ValueError, match="merge"):
        BiMamba(D_MODEL, merge="max")
    with pytest.raises(ValueError, match=r"\(B, L, D=16\)"):
        m(torch.randn(2, 5, 3))


@pytest.mark.parametrize(("variant", "merge"), [("v2", "mean"), ("v1", "add"), ("separate", "add")])
def test_unmasked_reverse_path_equals_the_flipped_path(variant: str, merge: str) -> None:
    """Without mask/resets the backward direction runs an anti-causal conv and a reverse scan
    (no flips); an all-True mask takes the flip-based general path: same values, same grads."""
    torch.manual_seed(0)
    m = _model(variant, merge)
    x = torch.randn(2, 70, D_MODEL, requires_grad=True)
    fast = m(x)
    fast.square().sum().backward()
    grads_fast = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    x.grad = None
    m.zero_grad()
    general = m(x, mask=torch.ones(2, 70, dtype=torch.bool))
    general.square().sum().backward()
    grads_general = [x.grad] + [p.grad for p in m.parameters()]
    _close(fast, general)
    for a, b in zip(grads_fast, grads_general, strict=True):
        _close(a, b, 1e-4)


def test_mamba_reverse_equals_flipping_and_rejects_state() -> None:
    torch.manual_seed(0)
    m = Mamba(D_MODEL, d_state=4)
    x = torch.randn(2, 11, D_MODEL)
    _close(m(x, reverse=True), m(x.flip(1)).flip(1))
    with torch.no_grad():  # the fused inference path
        _close(m(x, reverse=True), m(x.flip(1)).flip(1))
    with pytest.raises(ValueError, match="reverse=True"):
        m(x, reverse=True, return_state=True)
