"""A Go module proxy in a folder (GOPROXY=file://DIR): what `make dist-go` writes, and what the
Go consumer test (tests/e2e/test_go_module.py) builds against, offline.

A proxy serves, for each module version, MODULE/@v/VERSION.info, .mod and .zip (the module
zip format: every file under `module@version/`), and MODULE/@v/list
(https://go.dev/ref/mod#goproxy-protocol). Two sources:

- the module clients/go at VERSION, zipped from the files of the checkout that git tracks or
  would track (a proxy zips the tag clients/go/vX.Y.Z the same way):

      python tools/goproxy.py dist/go     # what `make dist-go` runs

- the Go sources Debian installs in /usr/share/gocode/src, for a build without network
  (debian_modules, serve_debian). Debian packages one version of each module, and its
  packages' own go.mod files name other versions (gRPC-Go 1.33's go.mod requires a newer
  genproto than Debian's): Debian's source of a module is served under every version that
  the requirement graph names, so that whichever one Go selects can be built; a module
  Debian does not have is served as a go.mod alone, which ends the graph there. Hashes of
  these zips are not those of the public checksum database: a build against them runs with
  GOSUMDB=off, and its go.sum must never be committed anywhere.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_GOPATH = Path("/usr/share/gocode")
GO_MODULE_DIR = ROOT / "clients" / "go"
# A fixed time for the .info files of modules that have no commit of their own here.
EPOCH = "2000-01-01T00:00:00Z"
# The folders a module zip leaves out (golang.org/x/mod/zip).
SKIPPED_FOLDERS = {".git", ".hg", ".svn", ".bzr", "vendor"}
# Characters a file path of a module may hold (golang.org/x/mod/module.CheckFilePath).
FILE_PATH = re.compile(r"[A-Za-z0-9!#$%&()+,\-.=@\[\]^_{}~ ]+")


@dataclass(frozen=True)
class Requirement:
    path: str
    version: str


def module_path(go_mod: str) -> str:
    match = re.search(r"(?m)^module\s+\"?([^\s\"]+)\"?", go_mod)
    if not match:
        raise ValueError("a go.mod without a module line")
    return match.group(1)


def requirements(go_mod: str) -> list[Requirement]:
    """The require directives of a go.mod, single and in blocks."""
    text = re.sub(r"//.*", "", go_mod)
    found: list[Requirement] = []
    for block in re.findall(r"(?ms)^require\s*\((.*?)^\)", text):
        found += [Requirement(*line.split()[:2]) for line in block.splitlines() if line.split()]
    for path, version in re.findall(r"(?m)^require\s+([^\s(]+)\s+(\S+)", text):
        found.append(Requirement(path, version))
    return found


def escape(path: str) -> str:
    """A module path or version as a proxy's URL has it: capitals as !lower."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), path)


def valid_file_path(relative: str) -> bool:
    return all(
        FILE_PATH.fullmatch(part) and not part.endswith((".", " ")) for part in relative.split("/")
    )


def module_files(folder: Path) -> dict[str, Path]:
    """The files of the module rooted at folder, by their path in it: regular files, without
    nested modules (a folder with a go.mod of its own) or the folders a module zip leaves out."""
    files: dict[str, Path] = {}
    stack = [folder]
    while stack:
        current = stack.pop()
        for entry in sorted(current.iterdir()):
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.name not in SKIPPED_FOLDERS and not (entry / "go.mod").exists():
                    stack.append(entry)
            elif entry.is_file():
                relative = entry.relative_to(folder).as_posix()
                if valid_file_path(relative):
                    files[relative] = entry
    return files


def write_zip(target: Path, path: str, version: str, files: Mapping[str, Path]) -> None:
    """A module zip: each file as `path@version/name`, in order, with a fixed time (the same
    files make the same bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{path}@{version}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name].read_bytes())
    partial.replace(target)


def serve(
    proxy: Path,
    path: str,
    version: str,
    go_mod: str,
    files: Mapping[str, Path] | None,
    time: str = EPOCH,
) -> None:
    """Writes one version of a module into the proxy: its .info and .mod, and its .zip when
    files are given (a version only named by a requirement needs no more than its go.mod)."""
    folder = proxy / escape(path) / "@v"
    folder.mkdir(parents=True, exist_ok=True)
    name = escape(version)
    (folder / f"{name}.info").write_text(json.dumps({"Version": version, "Time": time}) + "\n")
    (folder / f"{name}.mod").write_text(go_mod)
    if files is not None:
        write_zip(folder / f"{name}.zip", path, version, files)
    listed = folder / "list"
    versions = set(listed.read_text().split()) if listed.exists() else set()
    listed.write_text("".join(f"{v}\n" for v in sorted(versions | {version})))


# -- the module clients/go -------------------------------------------------------------------


def tracked_files(folder: Path) -> dict[str, Path]:
    """The files of folder that git tracks or would track (not ignored), as a tag has them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "."],
        cwd=folder,
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = {name for name in listed.split("\0") if name}
    in_module = module_files(folder)
    return {name: in_module[name] for name in sorted(names) if name in in_module}


def commit_time() -> str:
    """The time of the checkout's last commit, as the .info of a tag of it says."""
    return subprocess.run(
        ["git", "log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    ).stdout.strip()


def serve_module(proxy: Path, folder: Path = GO_MODULE_DIR) -> Requirement:
    """Writes the module of folder at VERSION into the proxy; its path and version."""
    version = "v" + (ROOT / "VERSION").read_text().strip()
    go_mod = (folder / "go.mod").read_text()
    path = module_path(go_mod)
    serve(proxy, path, version, go_mod, tracked_files(folder), commit_time())
    return Requirement(path, version)


# -- Debian's Go sources ---------------------------------------------------------------------


def debian_modules(gopath: Path = DEBIAN_GOPATH) -> dict[str, Path]:
    """Each module whose source Debian installs (one with a go.mod), by its path."""
    found: dict[str, Path] = {}
    for go_mod in sorted((gopath / "src").rglob("go.mod")):
        if "testdata" in go_mod.parts or any(p in SKIPPED_FOLDERS for p in go_mod.parts):
            continue
        try:
            found[module_path(go_mod.read_text())] = go_mod.parent
        except ValueError:
            continue
    return found


def serve_debian(
    proxy: Path, roots: Iterable[Requirement], modules: Mapping[str, Path]
) -> dict[str, set[str]]:
    """Serves every module version the requirements of roots name, transitively: Debian's
    source of the module when Debian has it, a go.mod alone otherwise. Returns the versions
    served with their source, by module path."""
    with_source: dict[str, set[str]] = {}
    pending = list(roots)
    seen: set[Requirement] = set()
    while pending:
        requirement = pending.pop()
        if requirement in seen:
            continue
        seen.add(requirement)
        path, version = requirement.path, requirement.version
        folder = modules.get(path)
        if folder is None:
            serve(proxy, path, version, f"module {path}\n", None)
            continue
        go_mod = (folder / "go.mod").read_text()
        if version not in with_source.get(path, set()):
            serve(proxy, path, version, go_mod, module_files(folder))
            with_source.setdefault(path, set()).add(version)
        pending += requirements(go_mod)
    return with_source


def main() -> int:
    parser = argparse.ArgumentParser(description="Write clients/go as a module proxy serves it.")
    parser.add_argument("out", type=Path, help="the proxy's folder (GOPROXY=file://OUT)")
    args = parser.parse_args()
    served = serve_module(args.out.resolve())
    folder = args.out / escape(served.path) / "@v"
    for suffix in (".info", ".mod", ".zip"):
        print(folder / f"{escape(served.version)}{suffix}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
