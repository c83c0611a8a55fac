"""Checkpoint helpers without processes: loading refuses pickled code, RNG states round-trip exactly."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from training import checkpoint


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loading_never_runs_pickled_code(tmp_path):
    original_load = torch.load
    marker = tmp_path / "pwned"
    path = tmp_path / "trainer_rank0.pt"
    torch.save({"step": 3, "evil": Payload(marker)}, path)
    with checkpoint.weights_only_loading(), pytest.raises(pickle.UnpicklingError):
        # Even a caller asking for weights_only=False (as DeepSpeed's loaders do) gets weights_only=True.
        torch.load(path, weights_only=False)
    assert not marker.exists()
    torch.save({"step": 3, "rng": checkpoint.rng_state()}, path)
    with checkpoint.weights_only_loading():
        assert torch.load(path)["step"] == 3
    assert torch.load is original_load  # restored after the block


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(checkpoint.rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    with checkpoint.weights_only_loading():
        checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
