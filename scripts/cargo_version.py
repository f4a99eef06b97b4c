#!/usr/bin/env python3
"""Prints the crate's version: `version` in the [package] table of Cargo.toml.

The one reader of that number outside cargo: the Python package
(bindings/python/setup.py) and its tests import `cargo_version`; the Node
package (bindings/node/build.js) and its tests run this script. So the crate,
run_recovery_version() and both packages carry one version.
"""

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cargo_version(cargo_toml=ROOT / "Cargo.toml"):
    """The `version` of the [package] table of `cargo_toml`."""
    with open(cargo_toml, "rb") as f:
        package = tomllib.load(f).get("package", {})
    if "version" not in package:
        raise SystemExit(f"cargo_version: no [package] version in {cargo_toml}")
    return package["version"]


if __name__ == "__main__":
    print(cargo_version(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "Cargo.toml"))
