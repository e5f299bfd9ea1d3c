"""One registry for every model in ssmkit.

Names are ``<domain>.<family>_<size>`` (``vision.vim_tiny``, ``timeseries.smamba``, ``core.mamba``).
A domain registers its models when it is imported; :func:`create_model` and :func:`list_models`
import the domain packages on demand, so ``ssmkit.create_model("vision.vim_tiny")`` works without
importing ``ssmkit.vision`` first.

Each entry also carries a *tiny* configuration and an example-input factory so that one test sweep
(``tests/test_registry.py``) builds every registered model small, runs it forward and backward,
and checks that every parameter receives a gradient.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

DOMAINS = ("core", "vision", "audio", "timeseries", "rl", "bio")

ModelFactory = Callable[..., nn.Module]
ExampleInputs = Callable[[nn.Module], tuple[Any, ...]]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name.

    Attributes:
        name: full registry name, ``<domain>.<family>_<size>``.
        factory: builds the model; keyword arguments override its defaults.
        tiny: overrides that make the model small enough for a CPU test sweep.
        example_inputs: given the (tiny) model, returns the positional arguments of one forward.
        description: one line shown by ``ssmkit models``.
    """

    name: str
    factory: ModelFactory
    tiny: dict[str, Any] = field(default_factory=dict)
    example_inputs: ExampleInputs | None = None
    description: str = ""

    @property
    def domain(self) -> str:
        return self.name.split(".", 1)[0]


_REGISTRY: dict[str, ModelEntry] = {}
_IMPORTED_DOMAINS: set[str] = set()


def register_model(
    name: str,
    *,
    tiny: dict[str, Any] | None = None,
    example_inputs: ExampleInputs | None = None,
    description: str = "",
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory under ``name``.

    Example::

        @register_model("core.mamba", tiny=dict(d_model=16), example_inputs=lambda m: (torch.randn(2, 8, 16),))
        def mamba(**kwargs) -> Mamba:
            return Mamba(**{"d_model": 256, **kwargs})
    """
    domain, sep, model = name.partition(".")
    if not sep or domain not in DOMAINS or not model:
        raise ValueError(
            f"Model name {name!r} must look like '<domain>.<family>_<size>' with domain in "
            f"{DOMAINS}, e.g. 'vision.vim_tiny'."
        )

    def decorator(factory: ModelFactory) -> ModelFactory:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.factory.__qualname__ != factory.__qualname__:
            raise ValueError(f"Model name {name!r} is already registered by {existing.factory!r}.")
        _REGISTRY[name] = ModelEntry(
            name=name,
            factory=factory,
            tiny=dict(tiny or {}),
            example_inputs=example_inputs,
            description=description or (factory.__doc__ or "").strip().split("\n")[0],
        )
        return factory

    return decorator


def _import_domain(domain: str) -> None:
    """Import ``ssmkit.<domain>`` so that its models register themselves (once)."""
    if domain in _IMPORTED_DOMAINS:
        return
    importlib.import_module(f"ssmkit.{domain}")
    _IMPORTED_DOMAINS.add(domain)


def _import_all_domains() -> None:
    for domain in DOMAINS:
        _import_domain(domain)


def list_models(domain: str | None = None, pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered.

    Args:
        domain: only names of this domain (``"vision"``, ``"core"``, ...).
        pattern: shell-style filter on the full name, e.g. ``"*vim*"``.
    """
    if domain is not None:
        if domain not in DOMAINS:
            raise ValueError(f"Unknown domain {domain!r}; expected one of {DOMAINS}.")
        _import_domain(domain)
    else:
        _import_all_domains()
    names = sorted(_REGISTRY)
    if domain is not None:
        names = [n for n in names if n.startswith(domain + ".")]
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def model_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` for ``name``; raises ``KeyError`` listing close matches."""
    domain = name.partition(".")[0]
    if domain in DOMAINS:
        _import_domain(domain)
    if name not in _REGISTRY:
        _import_all_domains()
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(
            f"Unknown model {name!r}.{hint} `ssmkit models` (or ssmkit.list_models()) lists all "
            f"{len(_REGISTRY)} registered names."
        )
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; keyword arguments override its defaults.

    Raises:
        KeyError: unknown name, with the closest registered names.
    """
    return model_entry(name).factory(**overrides)


def count_parameters(name: str, **overrides: Any) -> int:
    """Parameter count of ``name`` without allocating its weights (built on the meta device)."""
    with torch.device("meta"):
        model = create_model(name, **overrides)
    return sum(p.numel() for p in model.parameters())
