"""A recording stand-in for the Kubernetes API (the one part the tests do not run for real): it keeps every
call, stores objects, applies merge patches the way the API server does (RFC 7386), validates what it
stores against the vendored CRD schemas, and lets a test play the controller (status updates).

Its methods have the real `kubernetes.client.CustomObjectsApi` signatures; a test checks that."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from manifest_checks import crd_problems

Doc = dict[str, Any]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge key by key, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class RecordingCustomObjects:
    """CustomObjectsApi over an in-memory store. `on_write(obj)` runs after each create/patch (the
    controller's turn); `on_get(obj)` before each get returns."""

    def __init__(self, on_write: Callable[[Doc], None] | None = None, on_get: Callable[[Doc], None] | None = None):
        self.objects: dict[tuple[str, str, str], Doc] = {}
        self.calls: list[tuple] = []
        self.on_write, self.on_get = on_write, on_get

    # ---- helpers -----------------------------------------------------------------------------------------
    def _check(self, obj: Doc) -> None:
        spec_only = {k: v for k, v in obj.items() if k != "status"}
        problems = crd_problems([spec_only])
        if problems:
            raise ApiException(status=422, reason="Unprocessable Entity: " + "; ".join(problems))

    def verbs(self) -> set[tuple[str, str]]:
        """(verb, plural) pairs called so far, for the RBAC test."""
        names = {"get": "get", "create": "create", "patch": "patch", "delete": "delete", "list": "list"}
        return {(names[c[0]], c[1]) for c in self.calls}

    # ---- the CustomObjectsApi methods used by the code -----------------------------------------------------
    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("get", plural, namespace, name))
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise ApiException(status=404, reason="Not Found")
        if self.on_get:
            self.on_get(obj)
        return copy.deepcopy(obj)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kwargs):
        self.calls.append(("create", plural, namespace, copy.deepcopy(body)))
        name = body["metadata"]["name"]
        if (plural, namespace, name) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        obj = copy.deepcopy(body)
        obj["metadata"].update(namespace=namespace, generation=1, resourceVersion="1")
        self._check(obj)
        self.objects[(plural, namespace, name)] = obj
        if self.on_write:
            self.on_write(obj)
        return copy.deepcopy(obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, **kwargs):
        self.calls.append(("patch", plural, namespace, name, copy.deepcopy(body)))
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise ApiException(status=404, reason="Not Found")
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want is not None and want != obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        merged = merge_patch(obj, body)
        if merged.get("spec") != obj.get("spec"):
            merged["metadata"]["generation"] = obj["metadata"]["generation"] + 1
        merged["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        self._check(merged)
        self.objects[(plural, namespace, name)] = merged
        if self.on_write:
            self.on_write(merged)
        return copy.deepcopy(merged)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("delete", plural, namespace, name, kwargs))
        if self.objects.pop((plural, namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")
        return {"status": "Success"}


def signature_problems(fake: object, real: type = client.CustomObjectsApi) -> list[str]:
    """Methods of `fake` whose positional parameters differ from the real client's."""
    problems = []
    for name, method in inspect.getmembers(fake, inspect.ismethod):
        if name.startswith("_") or not hasattr(real, name):
            continue
        ours = [p for p in inspect.signature(method).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
        theirs = [p for p in inspect.signature(getattr(real, name)).parameters.values()
                  if p.kind == p.POSITIONAL_OR_KEYWORD and p.name != "self"]
        if [p.name for p in ours] != [p.name for p in theirs]:
            problems.append(f"{name}: {[p.name for p in ours]} != {[p.name for p in theirs]}")
    return problems


class RecordingCoreV1:
    """CoreV1Api's pod log call, recorded."""

    def __init__(self):
        self.calls: list[tuple] = []

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        self.calls.append(("get", "pods/log", namespace, name))
        return f"log of {name}"


GROUPS = {"sparkapplications": "sparkoperator.k8s.io", "inferenceservices": "serving.kserve.io", "pods/log": ""}


def called_rules(*recorders) -> dict[tuple[str, str], frozenset[str]]:
    """(apiGroup, resource) -> verbs over every call the recorders kept."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in recorders:
        for call in r.calls:
            out.setdefault((GROUPS[call[1]], call[1]), set()).add(call[0])
    return {k: frozenset(v) for k, v in out.items()}
