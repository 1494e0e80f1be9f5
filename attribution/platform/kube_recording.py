"""A recording Kubernetes API: the one part of the cluster that the emulated run (`attribution run --cloud
emulated`) and the tests do not run for real. It keeps every call, stores objects (optionally in a JSON
file, so a second run sees the first run's InferenceService), applies merge patches the way the API server
does (RFC 7386), validates what it stores against the vendored CRD schemas (attribution.platform.crd), and
lets a controller hook play the operator (status updates).

Its methods have the real `kubernetes.client.CustomObjectsApi` signatures; a test checks that."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from attribution.platform.crd import crd_problems

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
    """CustomObjectsApi over an in-memory store (kept in `state_file` when given). `on_write(obj)` runs after
    each create/patch (the controller's turn); `on_get(obj)` before each get returns."""

    def __init__(self, on_write: Callable[[Doc], None] | None = None, on_get: Callable[[Doc], None] | None = None,
                 state_file: str | os.PathLike | None = None):
        self.objects: dict[tuple[str, str, str], Doc] = {}
        self.calls: list[tuple] = []
        self.on_write, self.on_get = on_write, on_get
        self.state_file = os.fspath(state_file) if state_file else None
        if self.state_file and os.path.isfile(self.state_file):
            with open(self.state_file) as f:
                saved = json.load(f)
            self.objects = {tuple(o["key"]): o["object"] for o in saved["objects"]}

    # ---- helpers -----------------------------------------------------------------------------------------
    def _check(self, obj: Doc) -> None:
        spec_only = {k: v for k, v in obj.items() if k != "status"}
        problems = crd_problems([spec_only])
        if problems:
            raise ApiException(status=422, reason="Unprocessable Entity: " + "; ".join(problems))

    def _store(self, key: tuple[str, str, str], obj: Doc | None) -> None:
        if obj is None:
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        if self.state_file:
            doc = {"objects": [{"key": list(k), "object": v} for k, v in sorted(self.objects.items())]}
            with open(self.state_file, "w") as f:
                json.dump(doc, f, indent=1)

    def _write(self, key: tuple[str, str, str], obj: Doc) -> Doc:
        """A create's or patch's object: validated, stored, handed to the controller (whose status changes
        are stored too); the caller gets a copy, as from the API server."""
        self._check(obj)
        self._store(key, obj)
        if self.on_write:
            self.on_write(obj)
            self._store(key, obj)
        return copy.deepcopy(obj)

    def verbs(self) -> set[tuple[str, str]]:
        """(verb, plural) pairs called so far, for the RBAC test."""
        return {(c[0], c[1]) for c in self.calls}

    # ---- the CustomObjectsApi methods used by the code -----------------------------------------------------
    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("get", plural, namespace, name))
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise ApiException(status=404, reason="Not Found")
        if self.on_get:
            self.on_get(obj)
            self._store((plural, namespace, name), obj)
        return copy.deepcopy(obj)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kwargs):
        self.calls.append(("create", plural, namespace, copy.deepcopy(body)))
        name = body["metadata"]["name"]
        if (plural, namespace, name) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        obj = copy.deepcopy(body)
        obj["metadata"].update(namespace=namespace, generation=1, resourceVersion="1")
        return self._write((plural, namespace, name), obj)

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
        return self._write((plural, namespace, name), merged)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("delete", plural, namespace, name, kwargs))
        if (plural, namespace, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        self._store((plural, namespace, name), None)
        return {"status": "Success"}


class RecordingCoreV1:
    """CoreV1Api's pod log call, recorded; `logs` maps a pod name to its log."""

    def __init__(self, logs: dict[str, str] | None = None):
        self.calls: list[tuple] = []
        self.logs = logs if logs is not None else {}

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        self.calls.append(("get", "pods/log", namespace, name))
        return self.logs.get(name, f"log of {name}")
