"""Lightning bookkeeping that mlops keeps out of every training step (docs/benchmarks.md,
"Training speed"). Each relies on a name inside Lightning: these fail if an upgrade renames
it, where the step would only silently get slower again."""

from __future__ import annotations

import pytest
from lightning.pytorch.profilers import PassThroughProfiler
from torch import nn

from mlops.models.classifier import Classifier
from pipelines.train import train


def test_a_training_step_builds_no_profiler_context_and_no_slow_attribute_set(
    make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_sets: list[str] = []  # attributes of the Classifier set through nn.Module's checks
    module_setattr = nn.Module.__setattr__

    def counted_setattr(self: nn.Module, name: str, value: object) -> None:
        if isinstance(self, Classifier):
            slow_sets.append(name)
        module_setattr(self, name, value)

    profiled: list[str] = []  # Lightning's default profiler: one context manager per call
    generator_profile = PassThroughProfiler.profile

    def counted_profile(self: PassThroughProfiler, action_name: str):  # type: ignore[no-untyped-def]
        profiled.append(action_name)
        return generator_profile(self, action_name)

    monkeypatch.setattr(nn.Module, "__setattr__", counted_setattr)
    monkeypatch.setattr(PassThroughProfiler, "profile", counted_profile)
    result = train(make_cfg("model=mlp", "register=false", "test=false"))

    assert result.epochs == 2  # it trained: 2 epochs of 4 steps
    assert "_current_fx_name" not in slow_sets
    assert profiled == []
