"""Write requirements.lock without the packages an image does not need.

    python filter_lock.py requirements.lock EXCLUDE_FILE [EXCLUDE_FILE ...] > requirements.image.txt

The versions always come from the one lock; an exclude file only names packages (one per line, `#`
comments). tests/test_manifests.py checks that what is left still holds every dependency of what the
image runs, so an exclusion that breaks an import fails the test suite, not the container.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: str | Path) -> set[str]:
    names = set()
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonical(line))
    return names


def filter_lock(lock_lines: list[str], excluded: set[str]) -> list[str]:
    kept = []
    for line in lock_lines:
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        name = re.split(r"[=<>!~\[;@ ]", spec, maxsplit=1)[0]
        if canonical(name) not in excluded:
            kept.append(spec)
    return kept


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    excluded: set[str] = set()
    for path in argv[1:]:
        excluded |= read_names(path)
    lines = Path(argv[0]).read_text().splitlines()
    sys.stdout.write("\n".join(filter_lock(lines, excluded)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
