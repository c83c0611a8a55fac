"""The names in an output root that readers other than the stage writing them look up: the report (jobs/report.py),
training (training/storage.py), the demo and the benchmarks. Declared here once; the writers import them too.

    <out>/<stage>/                            one directory per stage, named as in STAGES, in this order
    <out>/<stage>/_manifest.json              MANIFEST: written last by the runner (pipeline/runner.py)
    <out>/dedup/_clusters/clusters.parquet    CLUSTERS: each duplicate cluster and its keeper (pipeline/dedup.py)
    <out>/tokenize/index.json                 the shards of each split: `INDEX_NAME`, part of the shard format
                                              (pipeline/shards.py)
"""

from __future__ import annotations

STAGES = ("urls", "crawl", "extract", "filter", "dedup", "tokenize")
MANIFEST = "_manifest.json"
CLUSTERS = "_clusters/clusters.parquet"
