"""Kubernetes pod specs as ``podman run`` arguments: what a kubelet would run, on one machine.

Pure functions (nothing is run here), used by ``podman_test.py`` and tested in
tests/test_container.py. The pod specs come from the rendered manifests (``kubectl
kustomize`` of the DaskJob, the helm chart's DaskCluster) passed through the
dask-kubernetes operator's own pod builders, so the containers get exactly the image,
args, environment, security context, volumes and limits Kubernetes would give them:

* ``args`` replace the image's CMD, ``command`` its ENTRYPOINT; ``$(VAR)`` references
  in them and in ``env`` values are expanded from the container's environment as the
  kubelet does (``$$`` escapes); ``envFrom``/``valueFrom`` read Secrets and ConfigMaps.
* ``securityContext`` (pod, then container): ``runAsUser``/``runAsGroup`` -> ``--user``,
  ``fsGroup`` -> ``--group-add``, ``runAsNonRoot`` refuses uid 0 as the kubelet does,
  ``readOnlyRootFilesystem`` -> ``--read-only`` (without podman's extra tmpfs mounts),
  ``allowPrivilegeEscalation: false`` -> ``no-new-privileges``, capabilities dropped and
  added; ``seccompProfile: RuntimeDefault`` is podman's default profile.
* volumes: ``emptyDir`` -> a tmpfs (its ``sizeLimit`` as the size), ``configMap`` -> the
  ConfigMap's files in a host directory, mounted read-only.
* ``resources.limits`` -> ``--cpus``/``--memory`` (requests only schedule).

Not emulated, on purpose: every container shares one network namespace (the caller's:
``--network host``), so Services resolve to 127.0.0.1 (``add_hosts``) and two workers'
dashboards cannot both have port 8788 (Dask moves the second to a free port); probes are
polled by the caller; scheduling fields (node selectors, tolerations, affinity, priority,
service accounts, image pull settings) have no meaning on one machine. Any other field
raises :class:`UnsupportedField`, so a spec that starts to rely on something this
emulation would ignore is noticed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["UnsupportedField", "container_env", "cpus", "expand", "memory_bytes",
           "podman_run_args"]

#: Pod fields that only place or identify the pod: meaningless on one machine.
POD_IGNORED = frozenset({
    "restartPolicy", "serviceAccountName", "automountServiceAccountToken", "nodeSelector",
    "tolerations", "affinity", "priorityClassName", "imagePullSecrets",
})
POD_HANDLED = frozenset({"containers", "volumes", "securityContext"})
#: Container fields handled by the caller (probes, ports on the shared network) or
#: meaningless here (pull policy of a local image).
CONTAINER_IGNORED = frozenset({"name", "image", "imagePullPolicy", "ports", "readinessProbe",
                               "livenessProbe"})
CONTAINER_HANDLED = frozenset({"args", "command", "env", "envFrom", "resources",
                               "securityContext", "volumeMounts", "workingDir"})
SECURITY_HANDLED = frozenset({"runAsUser", "runAsGroup", "fsGroup", "runAsNonRoot",
                              "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                              "capabilities", "seccompProfile"})

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


class UnsupportedField(ValueError):
    """A pod spec field this emulation does not reproduce."""


def _check(where: str, spec: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UnsupportedField(f"{where}: {', '.join(unknown)} not emulated")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's expansion of ``$(VAR)`` in args, command and env values.

    A variable that is not defined stays as written; ``$$`` is a literal ``$``.

    Examples
    --------
    >>> expand("--name $(POD) $(MISSING) $$(POD)", {"POD": "w-1"})
    '--name w-1 $(MISSING) $(POD)'
    """
    return re.sub(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))",
                  lambda m: "$" if m[1] == "$" else env.get(m[2], m[0]), text)


def cpus(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity in cores (``"500m"`` -> 0.5)."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity in bytes (``"4Gi"``, ``"512M"``, ``"1000"``)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?", str(quantity))
    if not match:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match[1]) * _UNITS.get(match[2] or "", 1))


def _lookup(kind: str, objects: Mapping[str, Mapping[str, str]], name: str) -> Mapping[str, str]:
    if name not in objects:
        raise KeyError(f"{kind} {name!r} is not among the rendered objects {sorted(objects)}")
    return objects[name]


def container_env(container: Mapping[str, Any], *, secrets: Mapping[str, Mapping[str, str]],
                  config_maps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The environment the kubelet gives a container (``envFrom`` first, then ``env``)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            data = _lookup("Secret", secrets, source["secretRef"]["name"])
        elif "configMapRef" in source:
            data = _lookup("ConfigMap", config_maps, source["configMapRef"]["name"])
        else:
            raise UnsupportedField(f"envFrom {source}")
        env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = _lookup("Secret", secrets, ref["name"])[ref["key"]]
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = _lookup("ConfigMap", config_maps, ref["name"])[ref["key"]]
        else:
            raise UnsupportedField(f"env {item['name']}: {item}")
    return env


def _security(pod: Mapping[str, Any], container: Mapping[str, Any], where: str) -> list[str]:
    ctx = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    _check(f"{where}: securityContext", ctx, SECURITY_HANDLED)
    out: list[str] = []
    if "runAsUser" in ctx:
        out += ["--user", f"{ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}"]
    if ctx.get("runAsNonRoot") and ctx.get("runAsUser", None) in (0, None):
        raise UnsupportedField(f"{where}: runAsNonRoot needs a numeric non-zero runAsUser here")
    if "fsGroup" in ctx:
        out += ["--group-add", str(ctx["fsGroup"])]
    if ctx.get("readOnlyRootFilesystem"):
        out += ["--read-only", "--read-only-tmpfs=false"]
    if ctx.get("allowPrivilegeEscalation") is False:
        out += ["--security-opt", "no-new-privileges"]
    caps = ctx.get("capabilities", {})
    out += [a for cap in caps.get("drop", []) for a in ("--cap-drop", cap)]
    out += [a for cap in caps.get("add", []) for a in ("--cap-add", cap)]
    if ctx.get("seccompProfile", {"type": "RuntimeDefault"}) != {"type": "RuntimeDefault"}:
        raise UnsupportedField(f"{where}: seccompProfile {ctx['seccompProfile']}")
    return out


def _volumes(pod: Mapping[str, Any], container: Mapping[str, Any], where: str,
             volume_dirs: Mapping[str, str]) -> list[str]:
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    out: list[str] = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        read_only = mount.get("readOnly", False)
        if "emptyDir" in volume:
            options = ["rw", "mode=1777"]
            if (volume["emptyDir"] or {}).get("sizeLimit"):
                options.append(f"size={memory_bytes(volume['emptyDir']['sizeLimit'])}")
            out += ["--tmpfs", f"{mount['mountPath']}:{','.join(options)}"]
        elif "configMap" in volume:
            source = volume_dirs[mount["name"]]
            out += ["--volume", f"{source}:{mount['mountPath']}:{'ro' if read_only else 'rw'}"]
        else:
            raise UnsupportedField(f"{where}: volume {mount['name']}: {sorted(volume)}")
    return out


def podman_run_args(
    pod: Mapping[str, Any], *, name: str, image: str | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    volume_dirs: Mapping[str, str] | None = None,
    add_hosts: Sequence[str] = (), extra: Sequence[str] = (),
) -> list[str]:
    """``podman run`` arguments (after ``podman``) for the single container of a pod spec.

    Parameters
    ----------
    pod : mapping
        A pod spec (``spec`` of a Pod, or of a Deployment's pod template) with one container.
    name : str
        Container name.
    image : str, optional
        Replaces the container's image.
    secrets, config_maps : mapping
        Name -> decoded data of the Secrets and ConfigMaps the pod refers to.
    volume_dirs : mapping
        Volume name -> host directory holding a ``configMap`` volume's files.
    add_hosts : sequence of str
        ``host:ip`` entries for the container's /etc/hosts (Service names).
    extra : sequence of str
        Further podman options, placed before the image.
    """
    _check("pod", pod, POD_HANDLED | POD_IGNORED)
    (container,) = pod["containers"]
    where = f"container {container['name']}"
    _check(where, container, CONTAINER_HANDLED | CONTAINER_IGNORED)
    env = container_env(container, secrets=secrets or {}, config_maps=config_maps or {})
    out = ["run", "--detach", "--name", name, "--network", "host"]
    out += [a for host in add_hosts for a in ("--add-host", host)]
    out += _security(pod, container, where)
    out += _volumes(pod, container, where, volume_dirs or {})
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        out += ["--cpus", f"{cpus(limits['cpu']):g}"]
    if "memory" in limits:
        out += ["--memory", str(memory_bytes(limits["memory"]))]
    if "workingDir" in container:
        out += ["--workdir", container["workingDir"]]
    out += [a for key, value in env.items() for a in ("--env", f"{key}={value}")]
    if "command" in container:
        out += ["--entrypoint", json.dumps([expand(c, env) for c in container["command"]])]
    out += [*extra, image or container["image"]]
    return out + [expand(a, env) for a in container.get("args", [])]
