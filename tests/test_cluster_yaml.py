"""cluster.yaml checked offline the way `ray up` checks it (Ray's AWS defaults filled in, then Ray's JSON schema and
consistency rules), plus what Ray cannot know we want: token auth, no public dashboard, the worker groups."""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml
from tests.helpers import REPO



@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(config))  # what `ray up` does before it validates
    validate_config(config)
    return config


def test_ray_accepts_the_config(cluster):
    config = prepared(cluster)
    assert config["head_node_type"] == "head"
    assert config["provider"]["type"] == "aws"


def test_the_validation_rejects_a_broken_config(cluster):
    """The check above can fail: an unknown key and a head type that does not exist are both caught."""
    with pytest.raises(jsonschema.ValidationError):
        prepared({**cluster, "max_worker": 3})
    with pytest.raises(ValueError, match="head_node_type"):
        prepared({**cluster, "head_node_type": "missing"})


def test_worker_groups_and_autoscaling_bounds(cluster):
    types = cluster["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert types["head"]["resources"] == {"CPU": 0}
    for name in ("cpu_worker", "gpu_worker"):
        assert 0 <= types[name]["min_workers"] <= types[name]["max_workers"]
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("p", "g"))
    assert not types["cpu_worker"]["node_config"]["InstanceType"].startswith(("p", "g"))
    assert cluster["max_workers"] == sum(types[n]["max_workers"] for n in ("cpu_worker", "gpu_worker"))


def test_token_authentication_on_every_node(cluster):
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cluster[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token ray start" in c for c in start), key
    assert any("export RAY_AUTH_MODE=token" in c for c in cluster["setup_commands"])


def test_dashboard_is_not_open_to_the_internet(cluster):
    head_start = " ".join(c for c in cluster["head_start_ray_commands"] if "ray start" in c)
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", head_start)
    assert "0.0.0.0" not in head_start
    rules = cluster["provider"]["security_group"]["IpPermissions"]
    for rule in rules:
        ports = range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1)
        public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
        assert not (public and (8265 in ports or 6379 in ports or rule.get("IpProtocol") == "-1")), rule
    for node_type in cluster["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"]  # Ray's group above, not an unchecked one


def test_setup_installs_torch_first_then_the_project(cluster):
    setup = cluster["setup_commands"]
    torch = next(i for i, c in enumerate(setup) if "install" in c and "torch" in c)
    project = next(i for i, c in enumerate(setup) if "install" in c and "-e ." in c)
    assert torch < project and "DS_BUILD_OPS=0" in setup[project]
    assert cluster["file_mounts"]["~/webtext"] == "."
    assert ".venv" in cluster["rsync_exclude"]
