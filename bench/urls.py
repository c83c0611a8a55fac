"""Records/s of the urls stage on a generated 1M-record .zst dump vs a bare zstandard + json.loads loop.

Both run on one core over the same file in the same run. The records have the size and shape of 2020s
submissions (about 110 keys, 3.3 kB), the bulk of Reddit's volume; a 2005-era dump (56 keys, 1.3 kB, where
parsing is cheaper and our per-record work weighs more) is measured once for reference. Peak memory of the stage
is measured in child processes on dumps of 1M and 250k records: flat in file size means the two are close.
Ends with RESULT lines (see DESIGN.md).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stage_child import run_child  # noqa: E402  (bench/, beside this script)

N_RECORDS = 1_000_000
REPEATS = 3


def bare_loop(path: Path) -> int:
    """What one writes without webtext: stream-decompress, split lines, json.loads each."""
    import zstandard

    n, tail = 0, b""
    with open(path, "rb") as raw:
        reader = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(raw)
        while chunk := reader.read(1 << 22):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                json.loads(line)
                n += 1
    return n


def main() -> None:
    from jobs.fixtures.dumpgen import write_large_zst

    with tempfile.TemporaryDirectory(prefix="bench-urls-") as tmp:
        tmp = Path(tmp)
        big = write_large_zst(tmp / "RS_big.zst", N_RECORDS, seed=1, era="2020s")
        small = write_large_zst(tmp / "RS_small.zst", N_RECORDS // 4, seed=2, era="2020s")
        print(f"dump: {N_RECORDS:,} records, {big.stat().st_size / 1e6:.0f} MB zst")
        bare_rates, stage_rates = [], []
        for _ in range(REPEATS):
            t = time.perf_counter()
            n = bare_loop(big)
            bare_rates.append(n / (time.perf_counter() - t))
            run = run_child({"stage": "urls", "inputs": [str(big)], "out": str(tmp / "out")})
            assert run["funnel"]["in"] == n
            stage_rates.append(n / run["wall_s"])
            print(f"  bare {bare_rates[-1]:,.0f} rec/s   stage {stage_rates[-1]:,.0f} rec/s   "
                  f"peak {run['peak_rss'] / 2**20:.0f} MB")
        small_run = run_child({"stage": "urls", "inputs": [str(small)], "out": str(tmp / "out_small")})
        old = write_large_zst(tmp / "RS_2005.zst", N_RECORDS // 2, seed=3, era="2005")
        t = time.perf_counter()
        n_old = bare_loop(old)
        bare_s = time.perf_counter() - t
        old_ratio = bare_s / run_child({"stage": "urls", "inputs": [str(old)], "out": str(tmp / "out_2005")})["wall_s"]
        print(f"2005-era records ({n_old:,}): stage / bare = {old_ratio:.2f}")
        bare, ours = statistics.median(bare_rates), statistics.median(stage_rates)
        # Each stage run is paired with the bare run just before it: the median of the pair ratios is robust to
        # the machine's load drifting between repeats.
        ratio = statistics.median(s / b for s, b in zip(stage_rates, bare_rates))
        print(f"funnel: {run['funnel']}")
        peak, small_peak = run["peak_rss"] / 2**20, small_run["peak_rss"] / 2**20
        print(f"peak RSS: {peak:.0f} MB at {N_RECORDS:,} records, {small_peak:.0f} MB at {N_RECORDS // 4:,}")
        print(f"records/s (medians): stage {ours:,.0f}, bare {bare:,.0f}")
        print(f"RESULT urls_vs_bare={ratio:.2f} goal>=0.8")
        print(f"RESULT urls_peak_growth_4x_input={peak / small_peak:.2f} goal<=1.25")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
