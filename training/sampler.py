"""The one sampler behind every training loader: which items each rank reads at each step, resumable exactly.

Epoch e visits the N items (token windows, fine-tuning examples) in a permutation drawn from (seed, e), without
replacement. The permutation is cut into global steps of B*W items (W ranks, batch B each); at each step rank r
takes items [position + r*B, position + (r+1)*B) of it, and the position moves on by B*W. The fewer than B*W items
left at an epoch's end are not served in that epoch (each epoch's permutation differs); when N < B*W the
permutation is repeated to fill one step (a loader that refuses that checks before sampling).

The cursor (`state_dict()`: epoch and position) is global, the same on every rank, so any rank's state resumes all
of them with exactly the next batch, also with another batch size or world size (the new ranks continue from the
same position in the same permutation). What the items are is the loader's to check on resume.
"""

from __future__ import annotations

import numpy as np


class EpochSampler:
    def __init__(self, n_items: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive (got {batch_size})")
        self.n_items, self.batch_size, self.rank, self.world_size, self.seed = (
            n_items, batch_size, rank, world_size, seed)
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def _permutation(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_items)
        return np.resize(order, max(len(order), self.global_batch))

    def next_ids(self) -> np.ndarray:
        """This rank's next batch of item ids; all ranks advance the global cursor together."""
        if self.position + self.global_batch > len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        mine = self._order[self.position + self.rank * self.batch_size:][: self.batch_size]
        self.position += self.global_batch
        return mine

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue from the cursor of `state` (any rank's, any batch or world size); its seed must be ours."""
        if state["seed"] != self.seed:
            raise ValueError(f"data loader state: seed was {state['seed']!r}, this loader has {self.seed!r}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
