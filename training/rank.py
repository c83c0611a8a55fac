"""One rank started by our torchrun launcher (training/launch.py): `python -m training.rank CONFIG_JSON` trains as
the rank torchrun names (RANK, WORLD_SIZE) on the TrainConfig in the file. It reports nothing: the launcher's
driver prints the run's summary. (A user's own `torchrun -m jobs.pretrain` rank goes through the CLI, which does.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.loop import train_worker


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m training.rank CONFIG_JSON", file=sys.stderr)
        return 2
    train_worker(json.loads(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
