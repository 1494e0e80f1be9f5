"""Download a Maven Central jar and check it against the checksum Maven publishes next to it.

    python fetch_jar.py URL DEST [SHA256]

With SHA256 given (the build arg GCS_CONNECTOR_SHA256), that pinned hash is checked as well, which is
what protects against a tampered mirror; the .sha1 check alone only catches a corrupt download.
"""
from __future__ import annotations

import hashlib
import sys
import urllib.request


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def main(argv: list[str]) -> int:
    url, dest = argv[0], argv[1]
    pinned = argv[2].strip() if len(argv) > 2 else ""
    data = fetch(url)
    expected_sha1 = fetch(url + ".sha1").decode().split()[0].strip()
    if hashlib.sha1(data).hexdigest() != expected_sha1:
        print(f"sha1 mismatch for {url}", file=sys.stderr)
        return 1
    if pinned and hashlib.sha256(data).hexdigest() != pinned:
        print(f"sha256 mismatch for {url}: got {hashlib.sha256(data).hexdigest()}", file=sys.stderr)
        return 1
    with open(dest, "wb") as out:
        out.write(data)
    print(f"{dest}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
