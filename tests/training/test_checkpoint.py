"""Checkpoint helpers without processes: loading refuses pickled code in one line naming the file, a damaged file
is named, the manifest written at save catches a changed file, RNG states round-trip exactly."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from training import checkpoint
from training.storage import COMPLETE


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
    with checkpoint.weights_only_loading(), pytest.raises(checkpoint.CheckpointError) as refused:
        # Even a caller asking for weights_only=False (as DeepSpeed's loaders do) gets weights_only=True.
        torch.load(path, weights_only=False)
    assert not marker.exists()
    # One line: the file, that it was refused and why; not torch's advice to load it with weights_only=False.
    message = str(refused.value)
    assert message.startswith(f"{path}: refused to load: it holds a pickled object") and "posix.system" in message
    assert "\n" not in message and "weights_only" not in message
    torch.save({"step": 3, "rng": checkpoint.rng_state()}, path)
    with checkpoint.weights_only_loading():
        assert torch.load(path)["step"] == 3
    assert torch.load is original_load  # restored after the block


def test_a_file_cut_short_is_named_in_one_line(tmp_path):
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.randn(64, 64)}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with checkpoint.weights_only_loading(), pytest.raises(checkpoint.CheckpointError) as err:
        torch.load(path)
    assert str(err.value).startswith(f"{path}: unreadable (") and "\n" not in str(err.value)


def test_verify_names_the_first_file_that_differs_from_the_manifest(tmp_path):
    tag = tmp_path / "step_00000004"
    tag.mkdir()
    (tag / "a.pt").write_bytes(b"x" * 100)
    (tag / "b.pt").write_bytes(b"y" * 100)
    (tag / COMPLETE).write_text(json.dumps({"step": 4, "files": checkpoint.file_records(tag)}))
    assert checkpoint.verify(tag) is None
    (tag / "b.pt").write_bytes(b"y" * 50)
    assert checkpoint.verify(tag) == f"{tag / 'b.pt'}: 50 bytes, 100 when it was saved"
    (tag / "b.pt").write_bytes(b"z" * 100)  # same size, other bytes
    assert checkpoint.verify(tag) == f"{tag / 'b.pt'}: its sha256 differs from the one recorded when it was saved"
    (tag / "b.pt").unlink()
    assert checkpoint.verify(tag) == f"{tag / 'b.pt'}: missing (the checkpoint's manifest lists it)"
    with pytest.raises(checkpoint.CheckpointError, match="b.pt: missing"):  # readers (eval, export) refuse it too
        checkpoint.consolidate(tmp_path, "step_00000004")
    (tag / COMPLETE).write_text(json.dumps({"step": 4}))  # saved before manifests: nothing to check against
    assert checkpoint.verify(tag) is None


@pytest.mark.parametrize("text", ["", '{"step": 4, "fi', "[]", "null", '"step 4"', '{"files": []}',
                                  '{"files": {"a.pt": 5}}', '{"files": {"a.pt": {"bytes": 1}}}'])
def test_a_damaged_manifest_is_named_in_one_line(tmp_path, text):
    """COMPLETE itself cut short or overwritten (any JSON that is not a manifest): one line naming it, never an
    exception from reading it, so resume sets the checkpoint aside like any other damaged one."""
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / COMPLETE).write_text(text)
    assert checkpoint.verify(tmp_path).startswith(f"{tmp_path / COMPLETE}: unreadable manifest (")


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(checkpoint.rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    with checkpoint.weights_only_loading():
        checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
