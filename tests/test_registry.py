"""Every registered model, built tiny: forward, no NaN, backward, every parameter gets a gradient."""

from __future__ import annotations

import pytest
import torch

import ssmkit
from ssmkit.core.registry import model_entry, register_model


def _float_tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() or obj.is_complex() else []
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _float_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _float_tensors(v)]
    if hasattr(obj, "__dataclass_fields__"):
        return [t for f in obj.__dataclass_fields__ for t in _float_tensors(getattr(obj, f))]
    return []


@pytest.mark.parametrize("name", ssmkit.list_models())
def test_registered_model_tiny_forward_backward(name: str) -> None:
    entry = model_entry(name)
    assert entry.example_inputs is not None, f"{name} is registered without example_inputs"
    model = ssmkit.create_model(name, **entry.tiny)
    model.train()
    outputs = _float_tensors(model(*entry.example_inputs(model)))
    assert outputs, f"{name}: forward returned no floating tensor"
    for out in outputs:
        assert torch.isfinite(out).all(), f"{name}: non-finite output"
    # A random projection, so that normalised outputs (softmax, norms) still give gradients.
    loss = sum(
        (out.real if out.is_complex() else out)
        .mul(torch.randn_like(out.real if out.is_complex() else out))
        .sum()
        for out in outputs
    )
    loss.backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, f"{name}: parameters without a finite gradient: {missing[:10]}"
    silent = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and p.grad is not None and p.grad.abs().sum() == 0
    ]
    assert len(silent) < max(1, sum(1 for _ in model.parameters())), (
        f"{name}: all gradients are zero"
    )


def test_unknown_name_lists_close_matches() -> None:
    names = ssmkit.list_models()
    if not names:
        pytest.skip("no model registered yet")
    near = names[0][:-1] + "x"
    with pytest.raises(KeyError, match="Did you mean"):
        ssmkit.create_model(near)


def test_bad_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="<domain>"):
        register_model("nodomain")
    with pytest.raises(ValueError, match="domain"):
        register_model("cooking.pasta_small")


def test_list_models_filters() -> None:
    for name in ssmkit.list_models(domain="core"):
        assert name.startswith("core.")
    assert ssmkit.list_models(pattern="*no-such-model*") == []
    with pytest.raises(ValueError, match="Unknown domain"):
        ssmkit.list_models(domain="cooking")
