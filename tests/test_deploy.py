"""Static checks of what a workshop needs beyond one machine: the image recipe and the Helm values.

Neither Docker nor Kubernetes runs here, so these check what can be checked without them: the
image installs the course with the same command as the Makefile and the README, pretrains the
models into the image, runs as a non-root user and copies no answer material; the Zero to
JupyterHub values parse and name only keys the chart defines, with a ``gpu`` profile on GPU
nodes, a shared exchange volume and culling of idle servers. The workshop hub's read-only model
cache is checked here too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
VALUES = ROOT / "deploy" / "z2jh-values.yaml"

# The keys the Zero to JupyterHub chart (4.x) defines, written from its configuration reference
# and values schema, as far as this project uses them or could reasonably reach for them. A leaf
# ``...`` is free-form there (traitlets config, Kubernetes objects, environment variables).
ANY = ...
CHART: dict[str, Any] = {
    "fullnameOverride": ANY,
    "nameOverride": ANY,
    "enabled": ANY,
    "imagePullSecret": ANY,
    "imagePullSecrets": ANY,
    "custom": ANY,
    "global": ANY,
    "debug": {"enabled": ANY},
    "rbac": {"create": ANY},
    "hub": {
        "config": ANY,
        "extraConfig": ANY,
        "extraEnv": ANY,
        "extraFiles": ANY,
        "extraVolumes": ANY,
        "extraVolumeMounts": ANY,
        "image": {"name": ANY, "tag": ANY, "pullPolicy": ANY, "pullSecrets": ANY},
        "resources": ANY,
        "db": {"type": ANY, "url": ANY, "password": ANY, "upgrade": ANY, "pvc": ANY},
        "cookieSecret": ANY,
        "concurrentSpawnLimit": ANY,
        "activeServerLimit": ANY,
        "consecutiveFailureLimit": ANY,
        "allowNamedServers": ANY,
        "namedServerLimitPerUser": ANY,
        "baseUrl": ANY,
        "services": ANY,
        "loadRoles": ANY,
        "nodeSelector": ANY,
        "tolerations": ANY,
        "networkPolicy": ANY,
    },
    "proxy": {
        "secretToken": ANY,
        "service": ANY,
        "https": ANY,
        "chp": ANY,
        "traefik": ANY,
        "annotations": ANY,
    },
    "singleuser": {
        "podNameTemplate": ANY,
        "extraTolerations": ANY,
        "nodeSelector": ANY,
        "extraNodeAffinity": ANY,
        "extraPodAffinity": ANY,
        "extraPodAntiAffinity": ANY,
        "networkTools": ANY,
        "events": ANY,
        "extraAnnotations": ANY,
        "extraLabels": ANY,
        "extraEnv": ANY,
        "lifecycleHooks": ANY,
        "initContainers": ANY,
        "extraContainers": ANY,
        "allowPrivilegeEscalation": ANY,
        "uid": ANY,
        "fsGid": ANY,
        "serviceAccountName": ANY,
        "storage": {
            "type": ANY,
            "extraLabels": ANY,
            "extraVolumes": ANY,
            "extraVolumeMounts": ANY,
            "static": {"pvcName": ANY, "subPath": ANY},
            "capacity": ANY,
            "homeMountPath": ANY,
            "dynamic": {
                "storageClass": ANY,
                "pvcNameTemplate": ANY,
                "volumeNameTemplate": ANY,
                "storageAccessModes": ANY,
                "subPath": ANY,
            },
        },
        "image": {"name": ANY, "tag": ANY, "pullPolicy": ANY, "pullSecrets": ANY},
        "startTimeout": ANY,
        "cpu": {"limit": ANY, "guarantee": ANY},
        "memory": {"limit": ANY, "guarantee": ANY},
        "extraResource": {"limits": ANY, "guarantees": ANY},
        "cmd": ANY,
        "defaultUrl": ANY,
        "extraPodConfig": ANY,
        "profileList": ANY,  # checked against PROFILE below
        "networkPolicy": ANY,
        "cloudMetadata": ANY,
    },
    "scheduling": {
        "userScheduler": ANY,
        "podPriority": ANY,
        "userPlaceholder": ANY,
        "corePods": ANY,
        "userPods": ANY,
    },
    "ingress": ANY,
    "prePuller": {
        "hook": ANY,
        "continuous": ANY,
        "pullProfileListImages": ANY,
        "extraImages": ANY,
        "pause": ANY,
        "annotations": ANY,
        "resources": ANY,
        "extraTolerations": ANY,
        "containerSecurityContext": ANY,
    },
    "cull": {
        "enabled": ANY,
        "users": ANY,
        "adminUsers": ANY,
        "removeNamedServers": ANY,
        "timeout": ANY,
        "every": ANY,
        "concurrency": ANY,
        "maxAge": ANY,
    },
}
# A profileList entry (KubeSpawner's profile_list); kubespawner_override takes KubeSpawner traits.
PROFILE = {"display_name", "slug", "description", "default", "kubespawner_override", "profile_options"}
KUBESPAWNER_TRAITS = {
    "image",
    "image_pull_policy",
    "cpu_limit",
    "cpu_guarantee",
    "mem_limit",
    "mem_guarantee",
    "extra_resource_limits",
    "extra_resource_guarantees",
    "node_selector",
    "tolerations",
    "environment",
    "volumes",
    "volume_mounts",
    "default_url",
    "start_timeout",
}


def _unknown(values: Any, allowed: Any, at: str = "") -> list[str]:
    if allowed is ANY or not isinstance(values, dict):
        return []
    bad = []
    for key, value in values.items():
        if key not in allowed:
            bad.append(f"{at}{key}")
        else:
            bad += _unknown(value, allowed[key], f"{at}{key}.")
    return bad


def _run_lines(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_values_name_only_chart_keys_and_have_the_workshop_settings() -> None:
    values = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    assert _unknown(values, CHART) == []
    profiles = values["singleuser"]["profileList"]
    for profile in profiles:
        assert set(profile) <= PROFILE, set(profile) - PROFILE
        assert set(profile.get("kubespawner_override", {})) <= KUBESPAWNER_TRAITS
    gpu = next(p for p in profiles if p["slug"] == "gpu")["kubespawner_override"]
    assert gpu["extra_resource_limits"]["nvidia.com/gpu"] == "1"
    assert gpu["node_selector"] and gpu["tolerations"], "the gpu profile must land on GPU nodes"
    assert gpu["environment"]["LABKIT_PROFILE"] == "gpu"
    storage = values["singleuser"]["storage"]
    mounts = {m["name"]: m["mountPath"] for m in storage["extraVolumeMounts"]}
    assert mounts["nbgrader-exchange"] == "/srv/nbgrader/exchange"
    assert any(v["name"] == "nbgrader-exchange" for v in storage["extraVolumes"])
    assert values["cull"]["enabled"] is True and values["cull"]["timeout"] > 0


def test_unknown_values_keys_are_caught() -> None:
    assert _unknown({"singleuser": {"memory": {"limt": "1G"}}, "culling": {}}, CHART) == [
        "singleuser.memory.limt",
        "culling",
    ]


def test_image_installs_like_the_makefile_and_readme() -> None:
    lines = _run_lines(DOCKERFILE.read_text(encoding="utf-8"))
    runs = [line for line in lines if line.startswith("RUN ")]
    assert any(re.search(r"\bmake install\b", r) for r in runs), "the image must install with make install"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^UV_SYNC_ARGS := --locked\b", makefile, re.M), "make install must sync from the lock"
    assert "$(UV) sync $(UV_SYNC_ARGS)" in makefile
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`make install`" in readme
    assert any("labkit pretrain" in r for r in runs), "the models must be pretrained into the image"
    assert any(line.startswith("ENV ") and "LABKIT_CACHE=" in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}, "the server must run as a non-root user"
    copies = " ".join(line for line in lines if line.startswith(("COPY ", "ADD ")))
    for secret in ("solutions", "tests", ".git", "gradebook", "submitted", " . "):
        assert secret not in copies, f"the image must not copy {secret.strip()}"
    exchange = yaml.safe_load(VALUES.read_text(encoding="utf-8"))["singleuser"]["storage"][
        "extraVolumeMounts"
    ]
    assert exchange[0]["mountPath"] in DOCKERFILE.read_text(encoding="utf-8"), (
        "image and chart share the exchange"
    )


def test_zoo_models_load_from_a_read_only_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A hub's shared model cache is read-only for learners: cached weights load without a lock file."""
    import builtins

    import labkit as lk

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    model = lk.models.pretrained("transactions-mlp", profile="ci", progress=False)
    real_open = builtins.open

    def read_only(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".lock") and any(m in mode for m in "wa+"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only)
    again = lk.models.pretrained("transactions-mlp", profile="ci", progress=False)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert (a == b).all()
