"""The recording Kubernetes API (attribution.platform.kube_recording, shared with `attribution run --cloud
emulated`) and what the tests check of it: the real client's signatures, the RBAC rules its calls need."""

from __future__ import annotations

import inspect

from kubernetes import client

from attribution.platform.kube_recording import (  # noqa: F401 - re-exported for the tests
    RecordingCoreV1,
    RecordingCustomObjects,
    merge_patch,
)


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


GROUPS = {"sparkapplications": "sparkoperator.k8s.io", "inferenceservices": "serving.kserve.io", "pods/log": ""}


def called_rules(*recorders) -> dict[tuple[str, str], frozenset[str]]:
    """(apiGroup, resource) -> verbs over every call the recorders kept."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in recorders:
        for call in r.calls:
            out.setdefault((GROUPS[call[1]], call[1]), set()).add(call[0])
    return {k: frozenset(v) for k, v in out.items()}
