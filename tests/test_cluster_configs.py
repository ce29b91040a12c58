"""Static checks of cluster/: the Ray cluster launcher config and the KubeRay manifests.

Nothing here talks to AWS or Kubernetes: the launcher config is validated with Ray's own
schema and config preparation, the manifests are parsed and checked for the pieces the
deployment depends on (image, entrypoint, GPUs, schedule, secrets, no literal keys).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER = REPO_ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
AWS_YAML = CLUSTER / "aws.yaml"
IMAGE = "ghcr.io/OWNER/depthseg:VERSION"
RAY_KINDS = {"RayCluster", "RayJob", "RayCronJob", "RayService"}


# ----------------------------------------------------------------------------- helpers

def _docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _all_manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(KUBERAY.glob("*.yaml")) for d in _docs(p)]


def _one(kind: str, path: Path) -> dict[str, Any]:
    found = [d for d in _docs(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    return found[0]


def _walk(node: Any):
    """Every dict inside a parsed YAML tree."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _containers(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for d in _walk(node):
        for c in d.get("containers", []) if isinstance(d.get("containers"), list) else []:
            out.append(c)
    return out


_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_CRON_NAMES = {
    3: {m: i + 1 for i, m in enumerate(
        "jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}


def cron_is_valid(expr: str) -> bool:
    """A standard 5-field cron expression (what Kubernetes CronJob and RayCronJob accept)."""
    fields = expr.split()
    if len(fields) != 5:
        return False
    for i, (field, (lo, hi)) in enumerate(zip(fields, _CRON_RANGES, strict=True)):
        names = _CRON_NAMES.get(i, {})

        def value(tok: str, lo: int = lo, hi: int = hi, names: dict = names) -> int | None:
            if tok.lower() in names:
                return names[tok.lower()]
            if not tok.isdigit():
                return None
            v = int(tok)
            return v if lo <= v <= hi else None

        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) < 1):
                return False
            if base in ("*", "?"):
                continue
            lo_tok, dash, hi_tok = base.partition("-")
            a = value(lo_tok)
            if a is None:
                return False
            if dash:
                b = value(hi_tok)
                if b is None or b < a:
                    return False
    return True


def test_cron_validator_itself() -> None:
    for good in ("0 2 * * *", "*/15 * * * *", "0 0 1,15 * mon-fri", "30 6 * jan-mar 0"):
        assert cron_is_valid(good), good
    for bad in ("0 2 * *", "60 * * * *", "0 24 * * *", "* * 0 * *", "@daily", "*/0 * * * *",
                "0 2 * * * *"):
        assert not cron_is_valid(bad), bad


# ----------------------------------------------------------------------------- launcher

def _aws_config() -> dict[str, Any]:
    with AWS_YAML.open() as f:
        return yaml.safe_load(f)


def test_aws_config_validates_against_ray_schema() -> None:
    config = _aws_config()
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(config, schema)  # the file as written

    # What `ray up` does before launching: merge the AWS defaults, then validate.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


def test_aws_config_node_types() -> None:
    config = _aws_config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker type"
    for name, t in gpu_types.items():
        assert t.get("min_workers", 0) == 0, f"{name}: GPU workers should scale from 0"
        assert 0 < t["max_workers"] <= config["max_workers"], name
        assert t["node_config"]["InstanceType"].split(".")[0] in {"g5", "g6", "g6e", "p4d", "p5"}
    for name, t in types.items():
        # S3 access comes from the instance role, never from keys in the file.
        assert "IamInstanceProfile" in t["node_config"], f"{name}: no IamInstanceProfile"


def test_aws_config_installs_the_package_with_matching_ray() -> None:
    config = _aws_config()
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "depthseg" in setup
    docker = config.get("docker") or {}
    if docker.get("image"):
        for key in ("image", "head_image", "worker_image"):
            if key in docker:
                assert docker[key].startswith(f"rayproject/ray:{ray.__version__}"), (
                    f"docker.{key} {docker[key]!r}: Ray must equal the installed {ray.__version__}")
    # The synced repository must be the one pip installs.
    mounts = config.get("file_mounts", {})
    assert any(remote in setup for remote in mounts), "setup_commands ignore file_mounts"


# ----------------------------------------------------------------------------- KubeRay

def test_every_manifest_parses_and_is_named() -> None:
    manifests = _all_manifests()
    assert manifests
    kinds = {d["kind"] for _, d in manifests}
    assert {"RayCluster", "RayJob", "RayCronJob", "CronJob", "ConfigMap"} <= kinds
    for path, doc in manifests:
        assert doc.get("apiVersion") and doc.get("kind"), path.name
        assert doc["metadata"]["name"], path.name
        if doc["kind"] in RAY_KINDS:
            assert doc["apiVersion"] == "ray.io/v1", f"{path.name}: {doc['apiVersion']}"


def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    specs.append(("raycluster", _one("RayCluster", KUBERAY / "raycluster.yaml")["spec"]))
    job = _one("RayJob", KUBERAY / "rayjob-train.yaml")
    specs.append(("rayjob", job["spec"]["rayClusterSpec"]))
    cron = _one("RayCronJob", KUBERAY / "scheduled-mapping.yaml")
    specs.append(("raycronjob", cron["spec"]["jobTemplate"]["rayClusterSpec"]))
    return specs


@pytest.mark.parametrize("name,spec", _cluster_specs(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_ray_cluster_spec(name: str, spec: dict[str, Any]) -> None:
    assert spec["rayVersion"] == ray.__version__, f"{name}: rayVersion != installed Ray"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert head[0]["image"] == IMAGE
    for c in head:
        assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), "GPU on head"
    groups = spec["workerGroupSpecs"]
    assert groups
    gpu_groups = 0
    for g in groups:
        assert g.get("minReplicas", 0) <= g.get("replicas", 0) <= g["maxReplicas"], g["groupName"]
        for c in g["template"]["spec"]["containers"]:
            assert c["image"] == IMAGE
            limits = c["resources"]["limits"]
            if int(limits.get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups += 1
    assert gpu_groups >= 1, f"{name}: no worker group with nvidia.com/gpu limits"
    if any(g.get("minReplicas", 0) < g["maxReplicas"] for g in groups):
        assert spec.get("enableInTreeAutoscaling") is True, f"{name}: min < max needs autoscaling"


def test_every_ray_pod_gets_s3_credentials_from_a_secret_or_irsa() -> None:
    for path, doc in _all_manifests():
        if doc["kind"] not in RAY_KINDS | {"CronJob"}:
            continue
        for c in _containers(doc):
            if c["name"] == "ray-job-submitter":
                continue
            refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            assert "depthseg-s3" in refs, f"{path.name}: container {c['name']} has no depthseg-s3"
            for env in c.get("env", []):
                if env["name"].startswith("AWS_") and env["name"] != "AWS_REGION":
                    assert "valueFrom" in env, f"{path.name}: literal {env['name']}"
    sa = _one("ServiceAccount", KUBERAY / "serviceaccount.yaml")
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]


def test_rayjob_trains() -> None:
    job = _one("RayJob", KUBERAY / "rayjob-train.yaml")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "jobs/train.py"]
    opts = {a for a in argv if a.startswith("--")}
    train_src = (REPO_ROOT / "jobs" / "train.py").read_text()
    for opt in opts:  # every flag is one jobs/train.py accepts
        assert f'add_argument("{opt}"' in train_src, f"jobs/train.py has no {opt}"
    assert {"--config", "--chips", "--storage", "--gpu", "--num-workers"} <= opts
    config = argv[argv.index("--config") + 1]
    assert (REPO_ROOT / config).is_file(), config
    for opt in ("--chips", "--storage"):
        assert argv[argv.index(opt) + 1].startswith("s3://"), opt
    workers = int(argv[argv.index("--num-workers") + 1])
    max_gpus = sum(g["maxReplicas"] for g in job["rayClusterSpec"]["workerGroupSpecs"])
    assert 1 <= workers <= max_gpus, "--num-workers must fit the GPU group"
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and ("working_dir" in runtime_env or "pip" in runtime_env)
    assert job.get("shutdownAfterJobFinishes") is True


def _mounted_configmaps(pod_spec: dict[str, Any]) -> dict[str, str]:
    """{configmap name: mount path} of the first container."""
    vols = {v["name"]: v["configMap"]["name"] for v in pod_spec.get("volumes", [])
            if "configMap" in v}
    mounts = pod_spec["containers"][0].get("volumeMounts", [])
    return {vols[m["name"]]: m["mountPath"] for m in mounts if m["name"] in vols}


def _regions_configmap() -> dict[str, Any]:
    cm = _one("ConfigMap", KUBERAY / "regions-configmap.yaml")
    regions = yaml.safe_load(cm["data"]["regions.yaml"])
    assert regions["regions"], "regions file lists no region"
    return cm


def _schedule_flags(argv: list[str]) -> None:
    """Every flag of a jobs/schedule.py command line is one it accepts."""
    src = (REPO_ROOT / "jobs" / "schedule.py").read_text()
    for opt in (a for a in argv if a.startswith("--")):
        assert f'add_argument("{opt}"' in src, f"jobs/schedule.py has no {opt}"


def test_regions_configmap_is_a_valid_regions_file() -> None:
    from depthseg.schedule.regions import parse_regions

    text = _regions_configmap()["data"]["regions.yaml"]
    regions = parse_regions(text, "regions-configmap.yaml")
    assert all(cron_is_valid(r.schedule) for r in regions)


def test_raycronjob_schedules_mapping() -> None:
    cm_name = _regions_configmap()["metadata"]["name"]
    cron = _one("RayCronJob", KUBERAY / "scheduled-mapping.yaml")["spec"]
    assert cron_is_valid(cron["schedule"]), cron["schedule"]
    tmpl = cron["jobTemplate"]
    argv = shlex.split(tmpl["entrypoint"])
    assert "jobs/schedule.py" in argv
    _schedule_flags(argv)
    regions = argv[argv.index("--regions") + 1]
    head_pod = tmpl["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = _mounted_configmaps(head_pod)
    assert cm_name in mounts and regions.startswith(mounts[cm_name].rstrip("/") + "/")


def test_cronjob_fallback_submits_to_the_raycluster() -> None:
    cm_name = _regions_configmap()["metadata"]["name"]
    cron = _one("CronJob", KUBERAY / "scheduled-mapping-cronjob.yaml")
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert cron_is_valid(spec["schedule"]), spec["schedule"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    argv = c.get("command", []) + c.get("args", [])
    assert c["image"] == IMAGE and "jobs/schedule.py" in argv
    _schedule_flags(argv)
    regions = argv[argv.index("--regions") + 1]
    mounts = _mounted_configmaps(pod)
    assert cm_name in mounts and regions.startswith(mounts[cm_name].rstrip("/") + "/")
    submit = argv[argv.index("--submit") + 1]
    cluster = _one("RayCluster", KUBERAY / "raycluster.yaml")["metadata"]["name"]
    assert submit == f"http://{cluster}-head-svc:8265", submit


# ----------------------------------------------------------------------------- secrets

_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
_SECRET = re.compile(r"aws_secret_access_key\s*[:=]\s*(\S+)", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"""^["']?(\$|REPLACE|<|\{|\.\.\.)""")


def test_secret_regexes_catch_keys() -> None:
    assert _KEY_ID.search("key: AKIAIOSFODNN7EXAMPLE")
    line = "aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    m = _SECRET.search(line)
    assert m and not _PLACEHOLDER.match(m.group(1))
    m = _SECRET.search("AWS_SECRET_ACCESS_KEY: REPLACE_WITH_SECRET")
    assert m and _PLACEHOLDER.match(m.group(1))


def test_no_literal_aws_keys_under_cluster() -> None:
    files = [p for p in CLUSTER.rglob("*") if p.is_file()]
    assert AWS_YAML in files
    for path in files:
        text = path.read_text(errors="replace")
        assert not _KEY_ID.search(text), f"{path}: AWS access key id"
        for m in _SECRET.finditer(text):
            assert _PLACEHOLDER.match(m.group(1)), f"{path}: secret access key value {m.group(1)!r}"


def test_readme_names_only_existing_files() -> None:
    readme = (CLUSTER / "README.md").read_text()
    for ref in set(re.findall(r"cluster/[\w./-]+\.(?:yaml|md|py)|cluster/Dockerfile", readme)):
        assert (REPO_ROOT / ref).is_file(), f"README names missing {ref}"
