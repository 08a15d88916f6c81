"""The portal's third-party browser assets, vendored from the npm registry at build time.

Nothing is loaded from a CDN at run time: htmx and its SSE extension are files of this
package (``static/vendor/``), served by ``infra server`` itself, so the portal works on an
isolated management network. Each file is pinned twice: the npm tarball by its registry
``integrity`` (SHA-512) and the extracted file by its SHA-256.

::

    python -m infra_automation.portal.vendor            # fetch what is missing or differs
    python -m infra_automation.portal.vendor --check    # verify only (exit 1 if not right)

Fetching uses ``npm pack`` (the registry's own client); without npm on the machine, files
that are already in place and match their pins are all it needs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_automation.exceptions import ConfigurationError

VENDOR_DIR = Path(__file__).parent / "static" / "vendor"


@dataclass(frozen=True)
class Asset:
    """One file taken from an npm package tarball."""

    member: str  # path inside the tarball
    name: str  # file name under static/vendor/
    sha256: str


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # "sha512-<base64>" as the registry publishes it
    assets: tuple[Asset, ...]

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


PACKAGES: tuple[NpmPackage, ...] = (
    NpmPackage(
        "htmx.org",
        "2.0.11",
        "sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==",
        (
            Asset(
                "package/dist/htmx.min.js",
                "htmx.min.js",
                "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
            ),
            Asset(
                "package/LICENSE",
                "htmx.LICENSE.txt",
                "d3d2456f76414f2456104660ebd65aff1c04cd7966b942bdabd63f3cdb316a38",
            ),
        ),
    ),
    NpmPackage(
        "htmx-ext-sse",
        "2.2.4",
        "sha512-LJmxVhykyflBWgh5PvbRidcyuqMHlgfajmmzumvKctv9puvsufeH6OaejSMZTNTnEI8O2wXXn4ZZtBdpEMqmEQ==",
        (
            Asset(
                "package/dist/sse.min.js",
                "htmx-ext-sse.min.js",
                "98a46496de0c3605fbffdce9167ba427bdd9553184f83f149c261891a92c0136",
            ),
            Asset(
                "package/LICENSE",
                "htmx-ext-sse.LICENSE.txt",
                "a17d224ce9afdc21ec9491b76a2f5d036d19aa641ac4f85ca29c21f9f7e54fdf",
            ),
        ),
    ),
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def problems(folder: Path = VENDOR_DIR) -> list[str]:
    """What is missing or differs from its pin under ``folder`` (empty: all in place)."""
    found: list[str] = []
    for package in PACKAGES:
        for asset in package.assets:
            path = folder / asset.name
            if not path.is_file():
                found.append(f"{asset.name}: missing ({package.spec})")
            elif sha256(path.read_bytes()) != asset.sha256:
                found.append(f"{asset.name}: differs from its pin ({package.spec})")
    return found


def check_integrity(package: NpmPackage, tarball: bytes) -> None:
    algorithm, _, expected = package.integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if actual != expected:
        raise ConfigurationError(f"{package.spec}: the tarball's {algorithm} is not the pinned one")


def extract(package: NpmPackage, tarball: bytes, folder: Path) -> None:
    """Check the tarball, then write its pinned files (each checked) into ``folder``."""
    check_integrity(package, tarball)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for asset in package.assets:
            member = archive.extractfile(asset.member)
            if member is None:
                raise ConfigurationError(f"{package.spec}: no file {asset.member}")
            data = member.read()
            if sha256(data) != asset.sha256:
                raise ConfigurationError(f"{package.spec}: {asset.member} is not the pinned file")
            temp = folder / f".{asset.name}.tmp"
            temp.write_bytes(data)
            temp.replace(folder / asset.name)


def npm_pack(package: NpmPackage) -> bytes:
    """The package's tarball, fetched by ``npm pack`` into a temporary folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigurationError("npm is needed to vendor the portal's assets: apt-get install npm")
    with tempfile.TemporaryDirectory(prefix="infra-vendor-") as temp:
        subprocess.run(
            [npm, "pack", package.spec, "--silent", "--pack-destination", temp],
            check=True,
            capture_output=True,
            timeout=300,
        )
        tarballs = list(Path(temp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise ConfigurationError(f"npm pack {package.spec} gave {len(tarballs)} tarballs")
        return tarballs[0].read_bytes()


def vendor(folder: Path = VENDOR_DIR) -> list[str]:
    """Fetch every package one of whose files is missing or differs; the specs fetched."""
    fetched: list[str] = []
    for package in PACKAGES:
        wanted = {a.name for a in package.assets}
        if any(p.split(":")[0] in wanted for p in problems(folder)):
            extract(package, npm_pack(package), folder)
            fetched.append(package.spec)
    return fetched


def main(argv: Sequence[str] = ()) -> int:
    if "--check" in argv:
        found = problems()
        for line in found:
            print(f"portal assets: {line}", file=sys.stderr)
        return 1 if found else 0
    try:
        fetched = vendor()
    except (ConfigurationError, subprocess.SubprocessError, OSError) as exc:
        print(f"portal assets: {exc}", file=sys.stderr)
        return 1
    print("portal assets: " + (f"vendored {', '.join(fetched)}" if fetched else "in place"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
