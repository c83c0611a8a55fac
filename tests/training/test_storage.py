"""Training with its shards and run directory on S3 (a local moto server): shards fetched once per machine and
verified, checkpoints uploaded tag by tag with COMPLETE last, resume from the remote run, readers of a remote run.

The integration test compares a run on S3 with the same run on local disk: the same code on the same bytes, so the
losses are equal bit for bit (fp32 on CPU, the same launcher), and so are those of a run killed and resumed from S3.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

from pipeline.runner import RunOptions, run_stage
from pipeline.shards import ShardError
from pipeline.storage import Dir, expand_inputs
from pipeline.tokenize import TokenizeConfig, TokenizeStage
from training import checkpoint, storage
from training.data import TokenWindows
from training.resolve import resolve
from training.data import expand_shards
from tests.helpers import REPO


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    """A real tokenize stage output (GPT-2 BPE, several train shards, index.json and _manifest.json)."""
    from tests.helpers import make_docs, write_parts

    root = tmp_path_factory.mktemp("corpus")
    docs = write_parts(root / "docs", make_docs(400, seed=3), 2)
    stage = TokenizeStage(TokenizeConfig(shard_tokens=2000, val_fraction=0.2))
    run_stage(stage, expand_inputs([str(docs)]), str(root / "out"), RunOptions(executor="local", quiet=True))
    return root / "out" / "tokenize"


def put_dir(local, uri: str) -> str:
    """Upload a local directory to a URI (the bucket made first); returns the URI."""
    remote = Dir(uri)
    remote.fs.create_dir(remote.path().split("/")[0])
    pafs.copy_files(str(local), remote.path(), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=remote.fs)
    return uri


def snapshot(path) -> tuple[int, int, bytes]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, open(path, "rb").read()


def test_shards_are_fetched_verified_reused_and_a_corrupt_copy_fetched_again(tokenized, s3, tmp_path, monkeypatch):
    uri = put_dir(tokenized, s3("data/webtext/tokenize"))
    cache = tmp_path / "cache"
    local = expand_shards([str(tokenized)], "train")
    assert [os.path.dirname(p) for p in local] == [str(tokenized)] * len(local) and len(local) >= 3  # in place
    fetched = expand_shards([uri], "train", str(cache))
    assert [os.path.basename(p) for p in fetched] == [os.path.basename(p) for p in local]
    for mine, theirs in zip(fetched, local):
        assert mine.startswith(str(cache)) and open(mine, "rb").read() == open(theirs, "rb").read()
    windows = TokenWindows(fetched, batch_size=4, seq_len=16, seed=1)
    same = TokenWindows(local, batch_size=4, seq_len=16, seed=1)
    assert windows.stream.fingerprint == same.stream.fingerprint
    assert np.array_equal(windows.next_windows(), same.next_windows())

    # A second run reuses the verified copies: not one is written again.
    before = [snapshot(p) for p in fetched]
    assert expand_shards([uri], "train", str(cache)) == fetched
    assert [snapshot(p) for p in fetched] == before

    # A copy changed on disk (same size, other bytes) is detected against the manifest's sha256 and fetched again;
    # a good copy that lost its stamp is hashed once more and kept.
    victim, kept = fetched[1], fetched[2]
    with open(victim, "r+b") as f:
        f.seek(2000)
        f.write(b"\xff\xff\xff\xff")
    os.unlink(os.path.join(os.path.dirname(kept), f".{os.path.basename(kept)}.verified"))
    assert expand_shards([uri], "train", str(cache)) == fetched
    assert open(victim, "rb").read() == open(local[1], "rb").read()
    assert snapshot(kept) == before[2]
    assert not list(cache.rglob(".tmp-*"))

    # The val split, a glob and a single file name their shards too; a loader takes the URI directly.
    assert [os.path.basename(p) for p in expand_shards([uri], "val", str(cache))] == [
        os.path.basename(p) for p in expand_shards([str(tokenized)], "val")]
    glob, one = s3("data/webtext/tokenize/part-train-*.bin"), s3("data/webtext/tokenize/part-train-00001.bin")
    assert expand_shards([glob], "train", str(cache)) == fetched
    assert [os.path.basename(p) for p in expand_shards([one], "train", str(cache))] == ["part-train-00001.bin"]
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "env-cache"))
    assert TokenWindows(uri, batch_size=2, seq_len=16, split="val").stream.n_tokens > 0
    assert list((tmp_path / "env-cache" / "shards").rglob("part-val-00000.bin"))


def test_one_process_per_machine_downloads_while_the_others_wait(tokenized, s3, tmp_path):
    """While one process holds the machine's lock on a shard directory (downloading), another's fetch waits; it
    then finds the copies verified and reuses them."""
    from concurrent.futures import ThreadPoolExecutor

    uri = put_dir(tokenized, s3("data/locked/tokenize"))
    cache = tmp_path / "cache"
    lock_dir = cache / storage.location_key(uri)
    with ThreadPoolExecutor(1) as pool:
        with storage.node_lock(lock_dir):  # another process's open file would do the same: flock is per open
            waiting = pool.submit(expand_shards, [uri], "train", str(cache))
            time.sleep(1.0)
            assert not waiting.done() and not list(lock_dir.glob("part-*"))
        fetched = waiting.result(timeout=60)
    assert [os.path.dirname(p) for p in fetched] == [str(lock_dir)] * len(fetched)
    assert expand_shards([uri], "train", str(cache)) == fetched


def test_a_remote_shard_that_does_not_match_its_manifest_is_refused(tokenized, s3, tmp_path):
    uri = put_dir(tokenized, s3("data/bad/tokenize"))
    remote = Dir(uri)
    name = "part-train-00001.bin"
    data = bytearray(remote.read_bytes(name))
    data[-2:] = b"\x00\x00" if data[-2:] != b"\x00\x00" else b"\x01\x00"
    remote.write_bytes(name, bytes(data))
    with pytest.raises(ShardError, match=f"^s3://data/bad/tokenize/{name}: fetched .* expected .* sha256"):
        expand_shards([uri], "train", str(tmp_path / "cache"))
    assert not list((tmp_path / "cache").rglob(f"*{name}"))  # no unverified copy left to use
    remote.write_bytes(name, bytes(data[:-2]))  # and one of the wrong size is named before any download
    with pytest.raises(ShardError, match=f"{name}: {len(data) - 2} bytes, its index and manifest say {len(data)}"):
        expand_shards([uri], "train", str(tmp_path / "cache"))


def test_remote_complete_tags_ignore_a_tag_without_complete_and_prune_keeps_the_newest(s3, tmp_path):
    run = Dir(s3("ckpt/runs/a"))
    run.fs.create_dir("ckpt")
    for tag in ("step_00000002", "step_00000004", "step_00000006", "step_00000008"):
        run.write_bytes(f"checkpoints/{tag}/mp_rank_00_model_states.pt", b"weights")
        if tag != "step_00000008":  # killed before COMPLETE
            run.write_bytes(f"checkpoints/{tag}/COMPLETE", b"{}\n")
    store = storage.RunStore(run.location, str(tmp_path / "staging"))
    assert store.complete_tags() == ["step_00000002", "step_00000004", "step_00000006"]
    assert store.prune(keep_last=2) == ["step_00000002"]
    assert store.complete_tags() == ["step_00000004", "step_00000006"]
    assert not run.exists("checkpoints/step_00000002") and run.exists("checkpoints/step_00000008")
    assert storage.RunStore(s3("ckpt/runs/none"), str(tmp_path / "s2")).complete_tags() == []


def test_upload_and_download_round_trip(s3, tmp_path):
    uri = s3("roundtrip/runs/b")
    Dir(uri).fs.create_dir("roundtrip")
    writer = storage.RunStore(uri, str(tmp_path / "node1"))
    files = {"metrics.jsonl": b'{"step": 1}\n', "tensorboard/events.out.tfevents.1": os.urandom(3000),
             "checkpoints/step_00000004/zero_pp_rank_1_mp_rank_00_optim_states.pt": os.urandom(50_000),
             "checkpoints/step_00000004/trainer_rank1.pt": b"state"}
    for name, data in files.items():
        (writer.local / name).parent.mkdir(parents=True, exist_ok=True)
        (writer.local / name).write_bytes(data)
    writer.push("metrics.jsonl", "tensorboard", "loss.png")  # loss.png does not exist: skipped
    writer.push_checkpoint_files("step_00000004", checkpoint.file_records)
    assert storage.RunStore(uri, str(tmp_path / "x")).complete_tags() == []  # no COMPLETE yet
    writer.mark_complete("step_00000004", '{"step": 4}\n')

    reader = storage.RunStore(uri, str(tmp_path / "node2"))
    (reader.local / "metrics.jsonl").parent.mkdir(parents=True)
    (reader.local / "metrics.jsonl").write_text("stale\n")
    reader.pull("metrics.jsonl", "tensorboard", "loss.png")
    reader.pull_checkpoint(reader.complete_tags()[-1])
    for name, data in files.items():
        assert (reader.local / name).read_bytes() == data, name
    assert (reader.local / "checkpoints/step_00000004/COMPLETE").read_text() == '{"step": 4}\n'
    assert not (reader.local / "loss.png").exists()
    with pytest.raises(FileNotFoundError, match="step_00000009: checkpoint not found"):
        reader.pull_checkpoint("step_00000009")
    reader.reset_staging()
    assert list(reader.local.iterdir()) == []
    # A local out_dir is its own staging: nothing to copy.
    local = storage.RunStore(str(tmp_path / "plain"))
    assert local.remote is None and local.local == tmp_path / "plain"


def test_ranks_sharing_a_staging_directory_do_its_part_once(s3, tmp_path, monkeypatch):
    """Which ranks share a disk is what their staging directories say, not what a launcher calls a machine (Ray
    Train groups ranks by IP): the first rank to come uploads or downloads for its directory, the others find it done."""
    uri = s3("shared/runs/c")
    Dir(uri).fs.create_dir("shared")
    calls = []
    for name in ("upload", "download"):
        real = getattr(storage, name)
        monkeypatch.setattr(storage, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    rank0, rank1 = storage.RunStore(uri, str(tmp_path / "node")), storage.RunStore(uri, str(tmp_path / "node"))
    rank2 = storage.RunStore(uri, str(tmp_path / "other-node"))
    tag = "step_00000004"
    for rank, store in enumerate((rank0, rank1, rank2)):
        (store.ckpt_root / tag).mkdir(parents=True, exist_ok=True)
        (store.ckpt_root / tag / f"trainer_rank{rank}.pt").write_bytes(b"state %d" % rank)
    records = [store.push_checkpoint_files(tag, checkpoint.file_records) for store in (rank0, rank1, rank2)]
    assert calls == ["upload", "upload"]  # one per staging directory
    # ... and what it uploaded, hashed once, for the checkpoint's manifest (rank 0 gathers them)
    assert [sorted(r) for r in records] == [["trainer_rank0.pt", "trainer_rank1.pt"], [], ["trainer_rank2.pt"]]
    assert records[2]["trainer_rank2.pt"] == {"bytes": 7, "sha256": hashlib.sha256(b"state 2").hexdigest()}
    rank0.mark_complete(tag, "{}\n")
    assert sorted(Dir(uri).list(f"checkpoints/{tag}")) == [f"checkpoints/{tag}/{n}" for n in (
        "COMPLETE", "trainer_rank0.pt", "trainer_rank1.pt", "trainer_rank2.pt")]
    for store in (rank0, rank1, rank2):
        store.drop_staged(tag)
    assert not (rank0.ckpt_root / tag).exists() and not (rank2.ckpt_root / tag).exists()

    calls.clear()
    for store in (rank0, rank1, rank2):  # a resumed attempt: each directory emptied and filled once
        store.open_attempt("attempt-1", tag)
    assert calls == ["download", "download"]
    assert sorted(p.name for p in (rank1.ckpt_root / tag).iterdir()) == [
        "COMPLETE", "trainer_rank0.pt", "trainer_rank1.pt", "trainer_rank2.pt"]
    (rank0.local / "left-by-a-killed-attempt").write_text("")
    rank1.open_attempt("attempt-2", None)  # the next attempt starts from an empty directory
    assert [p.name for p in rank1.local.iterdir()] == [".attempt"]


def test_resolve_mirrors_the_newest_complete_checkpoint_and_reuses_it(s3, tmp_path):
    run = Dir(s3("mirror/runs/c"))
    run.fs.create_dir("mirror")
    run.write_bytes("config.json", b'{"model": {}}')
    for tag, complete in (("step_00000004", True), ("step_00000008", True), ("step_00000012", False)):
        run.write_bytes(f"checkpoints/{tag}/mp_rank_00_model_states.pt", tag.encode())
        if complete:
            run.write_bytes(f"checkpoints/{tag}/COMPLETE", b"{}\n")
    cache = tmp_path / "mirrors"
    found = resolve(run.location, cache_dir=cache)
    path = found.run_dir
    assert (found.kind, found.tag, found.path) == ("checkpoint", "step_00000008", path / "checkpoints/step_00000008")
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == [
        "checkpoints/step_00000008/COMPLETE", "checkpoints/step_00000008/mp_rank_00_model_states.pt", "config.json"]
    weights = path / "checkpoints/step_00000008/mp_rank_00_model_states.pt"
    first = snapshot(weights)
    assert resolve(run.location, cache_dir=cache) == found and snapshot(weights) == first  # reused
    step = resolve(run.uri("checkpoints/step_00000004"), cache_dir=cache)
    assert step.tag == "step_00000004" and (step.run_dir / "config.json").is_file()
    assert step.path.is_dir() and step.describe().endswith("mirror/runs/c/checkpoints/step_00000004 step_00000004")
    assert resolve(run.location, "step_00000004", cache_dir=cache).path.name == "step_00000004"  # a tag asked for
    with pytest.raises(FileNotFoundError, match="step_00000012: not a complete checkpoint"):
        resolve(run.location, "step_00000012", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="not a run with a complete checkpoint"):
        resolve(s3("mirror/runs/missing"), cache_dir=cache)

    # A Hugging Face directory comes whole, and again when its files change.
    hf = Dir(s3("mirror/hf/gpt2"))
    hf.write_bytes("config.json", json.dumps({"model_type": "gpt2"}).encode())
    hf.write_bytes("model.safetensors", b"v1")
    copy = resolve(hf.location, cache_dir=cache)
    assert copy.kind == "hf" and copy.run_dir is None and (copy.path / "model.safetensors").read_bytes() == b"v1"
    assert resolve(hf.location, cache_dir=cache) == copy and (copy.path / "config.json").is_file()
    hf.write_bytes("model.safetensors", b"v2!")
    assert (resolve(hf.location, cache_dir=cache).path / "model.safetensors").read_bytes() == b"v2!"


# -- end to end ------------------------------------------------------------------------------------------------------
STEPS, KILL_AT = 8, 5
TWO_RANKS = {"launch.num_workers": 2, "launch.launcher": "torchrun", "zero.stage": 2, "batch.micro_batch_size": 2,
             "batch.global_batch_size": 8, "batch.grad_accum_steps": None, "model.vocab_size": 50257,
             "checkpoint.keep_last": 2}


@pytest.fixture(scope="module")
def run_on_disk(tokenized, tmp_path_factory):
    """The reference: the same 2-rank run with its shards and out_dir on local disk."""
    from tests.helpers import tiny_config
    from training.config import TrainConfig
    from training.launch import launch

    out = tmp_path_factory.mktemp("on-disk") / "run"
    local_data = {"train": [str(tokenized)], "val": [str(tokenized)]}
    launch(TrainConfig.model_validate(tiny_config(local_data, out, **TWO_RANKS)))
    return out


@pytest.mark.slow
def test_a_run_on_s3_trains_as_on_disk_resumes_exactly_and_is_read_back(tokenized, run_on_disk, s3, tmp_path,
                                                                        monkeypatch, capsys):
    from jobs.cli import main
    from tests.helpers import kill_at_step, qa_records, tiny_config, write_config, write_jsonl
    from training.config import TrainConfig
    from training.generate import load_model
    from training.launch import LaunchError, launch
    from training.metrics import losses_by_step, read_metrics

    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))  # every process's cache and staging
    data_uri = put_dir(tokenized, s3("bucket/webtext/tokenize"))
    run_uri = s3("bucket/runs/pretrain")
    on_disk = losses_by_step(run_on_disk / "metrics.jsonl")
    assert sorted(on_disk) == list(range(1, STEPS + 1))

    remote_config = TrainConfig.model_validate(
        tiny_config({"train": [data_uri], "val": [data_uri]}, run_uri, **TWO_RANKS))
    with monkeypatch.context() as m:
        kill_at_step(m, KILL_AT)
        with pytest.raises(LaunchError, match="torchrun exited"):
            launch(remote_config)
    remote = Dir(run_uri)
    assert storage.RunStore(run_uri).complete_tags() == ["step_00000004"]
    # what the killed run uploaded at its checkpoint: the curve up to it, equal to the run on disk
    killed = losses_by_step(remote.uri("metrics.jsonl"))
    assert killed == {s: on_disk[s] for s in range(1, 5)}
    summary = launch(remote_config)
    assert summary["resumed_from"] == "step_00000004" and summary["step"] == STEPS
    assert losses_by_step(remote.uri("metrics.jsonl")) == on_disk  # bitwise
    assert losses_by_step(remote.uri("metrics.jsonl"), "val_loss") == losses_by_step(
        run_on_disk / "metrics.jsonl", "val_loss")
    assert storage.RunStore(run_uri).complete_tags() == ["step_00000004", "step_00000008"]
    assert sorted(remote.list("checkpoints/step_00000008")) == sorted(
        f"checkpoints/step_00000008/{p.name}" for p in (run_on_disk / "checkpoints/step_00000008").iterdir())
    for name in ("summary.json", "config.json", "loss.png"):
        assert remote.exists(name), name
    staging = tmp_path / "cache" / "runs" / storage.location_key(run_uri) / "run"
    assert not list((staging / "checkpoints").glob("step_*"))  # uploaded, then dropped from the node's disk

    # Readers of the remote run: eval from the same validation windows, the same final weights.
    capsys.readouterr()
    assert main(["eval", "--checkpoint", run_uri]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    from_s3, _ = load_model(run_uri)
    from_disk, _ = load_model(run_on_disk)
    for (name, a), b in zip(from_s3.state_dict().items(), from_disk.state_dict().values()):
        assert torch.equal(a, b), name
    # `webtext export` of an older checkpoint of the remote run: that checkpoint's weights.
    assert main(["export", "--checkpoint", run_uri, "--tag", "step_00000004", "--out", str(tmp_path / "hf4")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"].endswith("step_00000004")
    exported, _ = load_model(tmp_path / "hf4")
    at_step4, _ = load_model(run_on_disk / "checkpoints" / "step_00000004")
    idx = torch.randint(0, 512, (2, 16))
    torch.testing.assert_close(exported(idx)[0], at_step4(idx)[0], rtol=0, atol=1e-6)

    # Fine-tuning from the remote run into another remote run, then sampling from that one.
    ft_uri = s3("bucket/runs/finetune")
    qa = write_jsonl(tmp_path / "qa.jsonl", qa_records()[:40])
    config = write_config(tmp_path / "ft.yaml", ft_uri, max_steps=4, **{
        "checkpoint.every": 2, "model.block_size": 32, "optim.warmup_steps": 2, "finetune.exact_match_examples": 0,
        "checkpoint.export_hf": True})
    assert main(["finetune", "--from", run_uri, "--data", qa, "--config", config]) == 0
    finetuned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert finetuned["step"] == 4 and finetuned["init_from"] == Dir(ft_uri).uri("init")
    ft = Dir(ft_uri)
    assert ft.read_bytes("init/SOURCE").decode().strip().endswith("step_00000008")
    assert storage.RunStore(ft_uri).complete_tags() == ["step_00000002", "step_00000004"]
    assert json.loads(ft.read_bytes("summary.json"))["step"] == 4
    assert ft.exists("hf/model.safetensors") and ft.exists("hf/webtext_chat_template.json")
    assert [r["step"] for r in read_metrics(ft.uri("metrics.jsonl")) if "loss" in r] == [4]
    assert main(["generate", "--ckpt", ft_uri, "--prompt", "The river", "--temperature", "0",
                 "--max-new-tokens", "3", "--device", "cpu"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out.strip())["completion"], str)

    # A checkpoint damaged in the bucket: the same command again verifies the staged copy, sets the checkpoint
    # aside and resumes from the one before, as on disk (training/loop.py open_run).
    victim = "checkpoints/step_00000008/trainer_rank1.pt"
    remote.write_bytes(victim, remote.read_bytes(victim)[:100])
    again = launch(remote_config)
    assert again["resumed_from"] == "step_00000004" and again["step"] == STEPS
    assert losses_by_step(remote.uri("metrics.jsonl")) == on_disk
    lines = [json.loads(line) for line in remote.read_bytes("metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, STEPS + 1))  # one line per step
    assert storage.RunStore(run_uri).complete_tags() == ["step_00000004", "step_00000008"]
    assert not remote.exists("checkpoints/step_00000008/REJECTED")  # saved again, whole


@pytest.mark.slow
def test_ray_train_on_s3_needs_nothing_but_the_uris(ray_session, tokenized, run_on_disk, s3, tmp_path):
    """The cluster's launcher: Ray Train workers (processes Ray started, without this test's environment) reach the
    bucket through the URIs alone (credentials in them here, an instance profile on AWS), and train as torchrun
    does on local disk, to the launchers' tolerance (tests/training/test_run.py)."""
    from tests.helpers import tiny_config
    from training.config import TrainConfig
    from training.launch import launch
    from training.metrics import losses_by_step

    def with_credentials(path: str) -> str:
        return s3(path).replace("s3://", "s3://test:test@")

    data_uri = put_dir(tokenized, with_credentials("raydata/webtext/tokenize"))
    run_uri = with_credentials("raydata/runs/ray")
    on_ray = {**TWO_RANKS, "launch.launcher": "ray", "launch.cpus_per_worker": 0.5,
              "staging_dir": str(tmp_path / "staging"), "data.cache_dir": str(tmp_path / "cache")}
    summary = launch(TrainConfig.model_validate(tiny_config({"train": [data_uri], "val": [data_uri]}, run_uri,
                                                            **on_ray)))
    assert summary["world_size"] == 2 and summary["step"] == STEPS
    remote = Dir(run_uri)
    assert losses_by_step(remote.uri("metrics.jsonl")) == pytest.approx(
        losses_by_step(run_on_disk / "metrics.jsonl"), rel=1e-6)
    assert storage.RunStore(run_uri).complete_tags() == ["step_00000004", "step_00000008"]
    assert remote.exists("ray")  # Ray Train's own run state, in the bucket too
    assert list((tmp_path / "cache").rglob("part-train-00000.bin"))


DRIVER = """
import json, sys
import ray
from training.config import TrainConfig
from training.launch import launch
config, env_vars = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# The job's environment reaches every worker Ray starts for it, on every node: here, the step to kill rank 0 at.
ray.init(address=config["launch"]["address"], runtime_env={"env_vars": env_vars})
print("SUMMARY", json.dumps(launch(TrainConfig.model_validate(config))))  # among the workers' lines
"""


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_nodes_share_nothing_but_the_bucket(ray_two_nodes, tokenized, run_on_disk, s3, tmp_path):
    """Multi-node training as on the AWS cluster: Ray Train puts one rank on each of two nodes that share no disk.
    Each node fetches the shards into its own cache and uploads what its rank wrote; a run killed mid-way resumes
    from the bucket on both nodes and ends with the losses of the run on one disk."""
    import subprocess
    import sys

    from tests.helpers import kill_env, tiny_config
    from training.metrics import losses_by_step

    def with_credentials(path: str) -> str:
        return s3(path).replace("s3://", "s3://test:test@")

    data_uri = put_dir(tokenized, with_credentials("nodes/webtext/tokenize"))
    run_uri = with_credentials("nodes/runs/two")
    config = tiny_config({"train": [data_uri], "val": [data_uri]}, run_uri, **{
        **TWO_RANKS, "launch.launcher": "ray", "launch.address": ray_two_nodes.address, "launch.cpus_per_worker": 1})
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token",
           storage.CACHE_ENV: str(tmp_path / "driver")}

    def drive(env_vars: dict) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", DRIVER, json.dumps(config), json.dumps(env_vars)], env=env,
                              text=True, cwd=REPO, capture_output=True, timeout=300)

    killed = drive(kill_env(KILL_AT))
    assert killed.returncode != 0 and "training failed" in killed.stderr, killed.stderr[-3000:]
    assert storage.RunStore(run_uri).complete_tags() == ["step_00000004"]
    resumed = drive({})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(next(line for line in resumed.stdout.splitlines() if line.startswith("SUMMARY "))[8:])
    assert (summary["resumed_from"], summary["world_size"], summary["step"]) == ("step_00000004", 2, STEPS)
    remote = Dir(run_uri)
    assert losses_by_step(remote.uri("metrics.jsonl")) == pytest.approx(
        losses_by_step(run_on_disk / "metrics.jsonl"), rel=1e-6)  # the launchers' tolerance
    # rank 1 ran on node b only: its files reached the bucket from there
    assert {"checkpoints/step_00000008/trainer_rank0.pt", "checkpoints/step_00000008/trainer_rank1.pt"} <= set(
        remote.list("checkpoints/step_00000008"))
    for name, home in ray_two_nodes.home.items():  # each node read shards and staged the run on its own disk
        assert list(home.rglob("part-train-00000.bin")), name
        assert (home / "runs" / storage.location_key(run_uri) / "run").is_dir(), name
