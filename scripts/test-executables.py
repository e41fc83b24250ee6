#!/usr/bin/env python3
"""The test executables of scripts/test.sh's PostgreSQL pass, from cargo's JSON messages.

Reads the output of `cargo test --workspace --no-run --message-format=json...` (the file named
by the first argument) and prints, one per line, "<package dir>\t<executable>" for every test
target of drosera-admin (library, binary and integration tests: what `cargo test -p
drosera-admin --tests` runs) and for drosera-e2e's uplink_e2e. Run from the package directory,
as cargo runs its tests. Exits non-zero if one of them is missing, so a renamed target cannot
silently drop out of the pass.
"""
import json
import os
import sys


def wanted(package: str, target: dict) -> bool:
    if "example" in target["kind"] or "bench" in target["kind"]:
        return False
    if package == "drosera-admin":
        return True
    return package == "drosera-e2e" and target["name"] == "uplink_e2e"


def package_name(package_id: str) -> str:
    """`path+file:///dir#name@1.0` (cargo 1.77+) or `name 1.0 (path+file:///dir)` (older)."""
    if " " in package_id:
        return package_id.split(" ")[0]
    tail = package_id.split("#")[-1]
    return tail.split("@")[0] if "@" in tail else package_id.split("#")[0].rstrip("/").split("/")[-1]


def main() -> int:
    found = []
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            if not line.startswith("{"):
                continue
            m = json.loads(line)
            if m.get("reason") != "compiler-artifact" or not m.get("profile", {}).get("test"):
                continue
            exe = m.get("executable")
            package = package_name(m["package_id"])
            if exe and wanted(package, m["target"]):
                found.append((package, m["target"]["name"], os.path.dirname(m["manifest_path"]), exe))
    packages = {p for p, *_ in found}
    names = {n for _, n, *_ in found}
    if "drosera-admin" not in packages or "uplink_e2e" not in names:
        print(f"test-executables: admin or uplink_e2e tests missing from {sys.argv[1]}", file=sys.stderr)
        return 1
    for _, _, d, exe in sorted(found):
        print(f"{d}\t{exe}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
