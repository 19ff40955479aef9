#!/usr/bin/env bash
# Sets up what build/cnitool13 is built from (make cnitool runs this when missing):
#  - libcni 1.3.0, the Go source Debian unstable ships as golang-github-appc-cni-dev
#    1.3.0-2 (architecture all), downloaded with a PRIVATE apt configuration (its own
#    source list, lists and cache under DEST) and unpacked with dpkg-deb -x into
#    DEST/root, a GOPATH of its own (DEST/root/usr/share/gocode). The machine's own
#    apt sources never get unstable.
#  - Go 1.23 from bookworm-backports (libcni 1.3 imports "slices": Go >= 1.21), with
#    bookworm-backports added as a machine source if none has it (backports are never
#    installed unless asked for by name).
#  - github.com/vishvananda/netns, libcni's other import, from Debian 12.
# The archive's address is read from the machine's apt sources at run time.
#
#   getlibcni13.sh DEST
set -euo pipefail
dest=$(realpath -m "${1:?usage: getlibcni13.sh DEST}")
PKG=golang-github-appc-cni-dev
VERSION=1.3.0-2
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SOURCES=/etc/apt/sources.list.d/debian.sources

# The first URI of a deb822 stanza that serves bookworm (not the security archive).
archive_uri() {
    local uri=""
    if [ -f "$SOURCES" ]; then
        uri=$(awk '
            /^[[:space:]]*$/ { if (s && u) { print u; exit } u = ""; s = 0; next }
            /^URIs:/ { u = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") s = 1 }
            END { if (s && u) print u }' "$SOURCES" | head -n1)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || { echo "getlibcni13: no bookworm archive in the apt sources" >&2; exit 1; }
    echo "$uri"
}

need_root() {
    [ "$(id -u)" = 0 ] || { echo "getlibcni13: run as root to install $*" >&2; exit 1; }
}

install_machine_packages() {
    local missing=""
    [ -x /usr/lib/go-1.23/bin/go ] || missing="golang-1.23-go"
    [ -d /usr/share/gocode/src/github.com/vishvananda/netns ] ||
        missing="$missing golang-github-vishvananda-netns-dev"
    [ -n "$missing" ] || return 0
    need_root "$missing"
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
            "$(archive_uri)" "$KEYRING" >/etc/apt/sources.list.d/bookworm-backports.sources
    fi
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

fetch_libcni() {
    local apt="$dest/apt" deb
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$apt/debs"
    echo "deb [signed-by=$KEYRING] $(archive_uri) unstable main" >"$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update -qq
    (cd "$apt/debs" && apt-get "${opts[@]}" download "$PKG=$VERSION")
    deb=$(ls "$apt/debs/${PKG}_"*.deb)
    rm -rf "$dest/root"
    dpkg-deb -x "$deb" "$dest/root"
    test -f "$dest/root/usr/share/gocode/src/github.com/containernetworking/cni/libcni/api.go"
}

install_machine_packages
fetch_libcni
echo "libcni $VERSION in $dest/root/usr/share/gocode; Go: $(/usr/lib/go-1.23/bin/go version)"
