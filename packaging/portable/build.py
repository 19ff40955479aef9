"""Build the frozen bundle inside a Debian 11 root, so it runs on glibc 2.31 (``make dist``).

A bundle needs the glibc its interpreter was built against, so the interpreter
is built in the oldest root we support:

1. the root: ``debootstrap --variant=minbase bullseye`` from the Debian archive
   the machine's apt sources name, plus a compiler and the -dev packages of
   the C modules we ship (ssl, ctypes, zlib, bz2, lzma);
2. the interpreter: CPython 3.11 from Debian's bookworm source package
   (``apt-get source`` through a private apt configuration; the machine's
   sources are only read), with Debian's fixes applied and its /usr layout
   patches left out, built there with ``--enable-shared`` (no tests, no PGO)
   into ``/opt/python3.11``;
3. that interpreter's pip installs the project's dependencies and
   PyInstaller, at the versions the project's venv has;
4. ``packaging/build_dist.py`` freezes the bundle there, from the checkout
   (bound into the root at its own path), and refuses a glibc floor above 2.31.

Steps 1 to 3 are cached under ``MULTIHOME_BUILD_CACHE`` (default
``/var/cache/multihome``): each keeps a file with the inputs it was made from
and is redone only when they change. Runs as root (debootstrap, chroot, mount).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MULTIHOME_BUILD_CACHE", "/var/cache/multihome"))
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITE = "bullseye"
ROOT_PACKAGES = [
    "gcc",
    "make",
    "libc6-dev",
    "binutils",  # PyInstaller strips with it; build_dist.py reads symbol versions with objdump
    "xz-utils",
    "ca-certificates",
    "libssl-dev",
    "zlib1g-dev",
    "libffi-dev",
    "libbz2-dev",
    "liblzma-dev",
]
PYTHON_SOURCE = ("bookworm", "python3.11")
PREFIX = "/opt/python3.11"
CONFIGURE = [
    f"--prefix={PREFIX}",
    "--enable-shared",
    f"LDFLAGS=-Wl,-rpath,{PREFIX}/lib",
    "--with-ensurepip=install",
    "--without-doc-strings",
    "--disable-test-modules",
    # libpython's own calls skip the PLT, as in Debian's and Fedora's builds (faster start-up)
    "CFLAGS_NODIST=-fno-semantic-interposition",
    "LDFLAGS_NODIST=-fno-semantic-interposition",
]
# Debian's patches that fit Python to Debian's /usr layout and packaging; the
# rest of the series (bug and security fixes) is applied.
DEBIAN_LAYOUT_PATCHES = {
    "deb-setup.diff",
    "deb-locations.diff",
    "distutils-install-layout.diff",
    "locale-module.diff",
    "distutils-link.diff",
    "distutils-sysconfig.diff",
    "sysconfig-debian-schemes.diff",
    "tkinter-import.diff",
    "gdbm-import.diff",
    "link-opt.diff",
    "setup-modules.diff",
    "profiled-build.diff",
    "langpack-gettext.diff",
    "disable-sem-check.diff",
    "lib-argparse.diff",
    "ctypes-arm.diff",
    "multiarch.diff",
    "lib2to3-no-pickled-grammar.diff",
    "ext-no-libpython-link.diff",
    "test-no-random-order.diff",
    "multiarch-extname.diff",
    "tempfile-minimal.diff",
    "disable-some-tests.diff",
    "ensurepip-disabled.diff",
    "mangle-fstack-protector.diff",
    "reproducible-buildinfo.diff",
    "pydoc-use-pager.diff",
    "local-doc-references.diff",
    "doc-build-texinfo.diff",
    "argparse-no-shutil.diff",
    "sysconfigdata-name.diff",
    "hurd_kfreebsd_thread_native_id.diff",
    "sphinx3.diff",
    "destshared-location.diff",
    "fix-py_compile.diff",
    "ntpath-import.diff",
}
# Distribution names whose versions are pinned to the project venv's.
PINNED = [
    "pydantic",
    "pydantic-core",
    "netaddr",
    "PyYAML",
    "pyinstaller",
    "pyinstaller-hooks-contrib",
]
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


def log(msg: str) -> None:
    print(f"portable: {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def archive_uri(sources: Path = SOURCES) -> str:
    """The Debian archive of the machine's apt sources: the first deb822 stanza that
    names a plain release suite (not -security or -updates)."""
    for stanza in re.split(r"\n\s*\n", sources.read_text()):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        suites = fields.get("suites", "").split()
        if "deb" in fields.get("types", "").split() and any("-" not in s for s in suites):
            return fields["uris"].split()[0].rstrip("/")
    sys.exit(f"portable: no Debian archive in {sources}")


def digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def remove_tree(path: Path) -> None:
    """rmtree, refusing a tree with anything mounted in it (a bound checkout, say)."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    inside = [m for m in mounts if m == str(path) or m.startswith(f"{path}/")]
    if inside:
        sys.exit(f"portable: {path} has mounts ({', '.join(inside)}); unmount them first")
    shutil.rmtree(path, ignore_errors=True)


def is_current(stamp: Path, key: str) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == key


def ensure_root(uri: str) -> tuple[Path, str]:
    """The bullseye build root, made once per set of inputs."""
    root, stamp = CACHE / f"{SUITE}-root", CACHE / f"{SUITE}-root.key"
    key = digest(SUITE, "minbase", uri, ",".join(ROOT_PACKAGES))
    if is_current(stamp, key) and (root / "usr" / "bin" / "gcc").exists():
        return root, key
    log(f"making the {SUITE} root in {root} (debootstrap, a few minutes)")
    tmp = CACHE / f"{SUITE}-root.tmp"
    remove_tree(tmp)
    CACHE.mkdir(parents=True, exist_ok=True)
    run(
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(ROOT_PACKAGES)}",
        f"--keyring={KEYRING}",
        SUITE,
        str(tmp),
        uri,
        stdout=subprocess.DEVNULL,
    )
    stamp.unlink(missing_ok=True)
    remove_tree(root)
    tmp.rename(root)
    stamp.write_text(key + "\n")
    return root, key


def fetch_python_source(uri: str) -> list[Path]:
    """Debian's source package (orig tarball, debian tarball), through a private apt
    configuration: its own sources file, lists and cache under the build cache."""
    suite, package = PYTHON_SOURCE
    apt = CACHE / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "src"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(f"deb-src [signed-by={KEYRING}] {uri} {suite} main\n")
    opts = [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        f"-oDir::Etc::SourceParts={apt / 'none'}",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oAPT::Sandbox::User=root",
        "-qq",
    ]
    run("apt-get", *opts, "update")
    src = apt / "src"
    run("apt-get", *opts, "source", "--download-only", package, cwd=src, stdout=subprocess.DEVNULL)
    dscs = sorted(src.glob(f"{package}_*.dsc"), key=lambda p: p.stat().st_mtime)
    if not dscs:
        sys.exit(f"portable: apt-get source {package} left no .dsc in {src}")
    version = dscs[-1].name.removeprefix(f"{package}_").removesuffix(".dsc")
    upstream = version.split("-")[0]
    files = [src / f"{package}_{upstream}.orig.tar.gz", src / f"{package}_{version}.debian.tar.xz"]
    for path in files:
        if not path.is_file():
            sys.exit(f"portable: {path} is missing after apt-get source")
    return files


# In a mount namespace of its own (the mounts vanish with it, even on a kill): /proc,
# /dev and the checkout, at its own path, inside the root; then chroot.
ENTER = (
    'r=$1 src=$2; shift 2; mount --rbind /proc "$r/proc"; mount --rbind /dev "$r/dev"; '
    'mkdir -p "$r$src"; mount --bind "$src" "$r$src"; exec chroot "$r" "$@"'
)


def chroot(root: Path, script: str) -> None:
    enter = ["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, "sh"]
    run(*enter, str(root), str(ROOT), "/bin/sh", "-ec", script, env=CHROOT_ENV)


def build_core_for_modules(source: Path, touched: list[str]) -> None:
    """Debian builds some modules into libpython, and its fixes use internal headers there
    (CVE-2026-4224's pyexpat.c includes pycore_ceval.h). Built as shared modules, as here,
    those need Py_BUILD_CORE_MODULE, as upstream's own modules that include them define."""
    guard = "#ifndef Py_BUILD_CORE_BUILTIN\n#  define Py_BUILD_CORE_MODULE 1\n#endif\n"
    for path in [source / name for name in touched]:
        text = path.read_text(errors="surrogateescape")
        if '#include "pycore_' in text and "Py_BUILD_CORE" not in text:
            path.write_text(guard + text, errors="surrogateescape")


def ensure_python(root: Path, root_key: str, files: list[Path]) -> None:
    """CPython built in the root into PREFIX, once per source version and root."""
    orig, debian = files
    stamp = root / PREFIX[1:] / ".multihome-build"
    key = digest(root_key, orig.name, debian.name, *CONFIGURE, *sorted(DEBIAN_LAYOUT_PATCHES))
    if is_current(stamp, key):
        return
    log(f"building CPython from {debian.name} in the root (a few minutes)")
    work = root / "var" / "tmp" / "python-build"
    remove_tree(work)
    remove_tree(root / PREFIX[1:])
    work.mkdir(parents=True)
    for tarball in (orig, debian):  # verified by apt against the archive's signed index
        with tarfile.open(tarball) as archive:
            archive.extractall(work)  # noqa: S202
    (source,) = [p for p in work.iterdir() if p.name.startswith("Python-")]
    series = (work / "debian" / "patches" / "series").read_text().split()
    touched: set[str] = set()
    for patch in series:
        if patch not in DEBIAN_LAYOUT_PATCHES:
            diff = work / "debian" / "patches" / patch
            run("patch", "-p1", "-s", "--forward", "-i", str(diff), cwd=source)
            touched |= set(
                re.findall(
                    r"^\+\+\+ [^/\s]+/(Modules/[^/\s]+\.c)", diff.read_text(errors="replace"), re.M
                )
            )
    build_core_for_modules(source, sorted(touched))
    configure = " ".join(f"'{arg}'" for arg in CONFIGURE)
    inside = "/" + str(source.relative_to(root))
    chroot(
        root,
        f"cd {inside}; ./configure -q {configure} >/dev/null; make -s -j{os.cpu_count() or 2} "
        f">/dev/null; make -s install COMPILEALL_OPTS=-j0 >/dev/null",
    )
    chroot(
        root,
        f"{PREFIX}/bin/python3.11 -c 'import ssl, ctypes, zlib, bz2, lzma, hashlib, "
        "_hashlib, json; print(ssl.OPENSSL_VERSION)'",
    )
    remove_tree(work)
    stamp.write_text(key + "\n")


def requirements() -> list[str]:
    """The project's runtime and dist dependencies, pinned to the venv's versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~ \[]", dep)[0] for dep in project["dependencies"]]
    names += [re.split(r"[<>=!~ \[]", dep)[0] for dep in project["optional-dependencies"]["dist"]]
    pins = []
    for name in dict.fromkeys(n.lower().replace("_", "-") for n in [*names, *PINNED]):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def ensure_requirements(root: Path) -> None:
    pins = requirements()
    stamp = root / PREFIX[1:] / ".multihome-requirements"
    key = digest(*pins)
    if is_current(stamp, key):
        return
    log(f"pip install {' '.join(pins)}")
    quoted = " ".join(f"'{pin}'" for pin in pins)
    shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
    # pip in the root trusts what the machine's pip trusts (PIP_CERT, else the system CAs).
    host_ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    cert = ""
    if host_ca.is_file():
        shutil.copy2(host_ca, root / "etc" / "ssl" / "certs" / "multihome-build-ca.crt")
        cert = "--cert /etc/ssl/certs/multihome-build-ca.crt"
    chroot(
        root,
        f"{PREFIX}/bin/python3.11 -m pip install -q --disable-pip-version-check "
        f"--root-user-action=ignore {cert} {quoted}",
    )
    stamp.write_text(key + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("portable: make dist runs as root (debootstrap, chroot, mount)")
    start = time.monotonic()
    uri = archive_uri()
    root, root_key = ensure_root(uri)
    files = fetch_python_source(uri)
    ensure_python(root, root_key, files)
    ensure_requirements(root)
    log(f"freezing in {root} ({time.monotonic() - start:.0f} s so far)")
    chroot(root, f"cd {ROOT}; {PREFIX}/bin/python3.11 packaging/build_dist.py")
    log(f"done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
