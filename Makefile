# multihome: make demo | make test | make lint
# Every target sets up what it needs: Debian packages (as root), the venv,
# the development CNI binaries and the libcni client.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
CNIBIN := $(BUILD)/cni-bin
CNITOOL := $(BUILD)/cnitool
# libcni 1.3.0 (spec 1.1.0: GC, STATUS) from Debian unstable's source package, built
# with bookworm-backports' Go 1.23: conformance/cnitool13/getlibcni13.sh sets both up.
CNITOOL13 := $(BUILD)/cnitool13
LIBCNI13 := $(BUILD)/libcni13
GO123 := /usr/lib/go-1.23/bin/go
GOPATH_DEB := /usr/share/gocode
PYTEST_ARGS ?=
APT_PACKAGES := containernetworking-plugins golang-go golang-github-appc-cni-dev iproute2 \
	iputils-ping python3-venv python3-dev podman runc busybox-static binutils \
	etcd-server etcd-client openssl debootstrap patch

.PHONY: all deps venv bin cnitool test test-vm dist test-dist lint demo bench robustness clean

all: bin cnitool

# Debian packages: installed only when something is missing.
deps: $(BUILD)/.deps
# $(call apt_missing,PACKAGES): a recipe line that installs those of PACKAGES not installed.
define apt_missing
@missing=""; for p in $(1); do \
	dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
	echo "installing Debian packages:$$missing"; \
	if [ "$$(id -u)" != 0 ]; then echo "run as root, or install:$$missing" >&2; exit 1; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef
$(BUILD)/.deps:
	$(call apt_missing,$(APT_PACKAGES))
	@mkdir -p $(BUILD) && touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml | $(BUILD)/.deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

bin: $(CNIBIN)/.stamp
$(CNIBIN)/.stamp: $(VENV)/.stamp packaging/devbin.py lib/registry.py
	$(PY) packaging/devbin.py --dest $(CNIBIN) --pkgroot $(BUILD)/pkgroot
	touch $@

cnitool: $(CNITOOL) $(CNITOOL13)
$(CNITOOL): conformance/cnitool/main.go | $(BUILD)/.deps
	GO111MODULE=off GOPATH=$(GOPATH_DEB) GOCACHE=$(abspath $(BUILD))/gocache \
		go build -o $@ ./conformance/cnitool

# The libcni client again, static (no cgo), to run inside tests/test_portable.py's Debian 11 root.
CNITOOL_STATIC := $(BUILD)/cnitool-static
$(CNITOOL_STATIC): conformance/cnitool/main.go | $(BUILD)/.deps
	CGO_ENABLED=0 GO111MODULE=off GOPATH=$(GOPATH_DEB) GOCACHE=$(abspath $(BUILD))/gocache \
		go build -o $@ ./conformance/cnitool

$(LIBCNI13)/.stamp: conformance/cnitool13/getlibcni13.sh | $(BUILD)/.deps
	conformance/cnitool13/getlibcni13.sh $(LIBCNI13)
	touch $@

$(CNITOOL13): conformance/cnitool13/main.go $(LIBCNI13)/.stamp
	GO111MODULE=off GOTOOLCHAIN=local GOPATH=$(abspath $(LIBCNI13))/root$(GOPATH_DEB):$(GOPATH_DEB) \
		GOCACHE=$(abspath $(BUILD))/gocache13 $(GO123) build -o $@ ./conformance/cnitool13

# The manifests' security lint (tests/test_manifests.py) in a venv of its own:
# checkov pins more than the project's venv should carry.
CHECKOV := $(BUILD)/checkov-venv/bin/checkov
$(CHECKOV): | $(BUILD)/.deps
	$(PYTHON) -m venv $(BUILD)/checkov-venv
	$(BUILD)/checkov-venv/bin/pip install -q --disable-pip-version-check 'checkov==3.3.30'

test: bin cnitool $(CHECKOV)
	$(PY) -m pytest $(PYTEST_ARGS)

# The frozen multicall bundle: dist/bundle/multihome/ and dist/cni-bin/ (symlinks).
# Built inside a Debian 11 root with a CPython built there, so it runs on glibc 2.31
# (packaging/portable/build.py; root and interpreter cached in /var/cache/multihome).
dist: bin
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dist]'
	$(PY) packaging/portable/build.py

# The same suites, run against the frozen binaries.
test-dist: dist cnitool $(CNITOOL_STATIC) $(CHECKOV)
	MULTIHOME_CNI_BIN=$(CURDIR)/dist/cni-bin $(PY) -m pytest $(PYTEST_ARGS)

# The tests that need ipvlan, vlan or dummy, in a guest kernel that has them (this
# machine's kernel does not); the guest sees the host's files. conformance/vm/vmrun.sh
# boots User-Mode Linux when it can (with a small ptrace shim, built here with cc, on
# CPUs with AMX) and QEMU/TCG otherwise; MULTIHOME_VM=qemu forces QEMU. The run fails
# unless every needs_kernel test the host collects passes there and none skips.
VM_PACKAGES := user-mode-linux kmod busybox-static gcc libc6-dev qemu-system-x86 cpio
test-vm: bin cnitool
	$(call apt_missing,$(VM_PACKAGES))
	PY=$(PY) conformance/vm/test_vm.sh $(PYTEST_ARGS)

# mypy sees the package as installed (multihome.*) through build/pkgroot.
lint: bin
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MYPYPATH=$(BUILD)/pkgroot $(VENV)/bin/mypy -p multihome.lib -p multihome.plugins \
		-p multihome.ipam
	MYPYPATH=$(BUILD)/pkgroot $(VENV)/bin/mypy packaging/devbin.py packaging/portable/build.py conformance/demo.py

demo: bin cnitool
	$(PY) conformance/demo.py

# Malformed input, fuzzing, kill -9, concurrency and disk faults (see SECURITY.md).
robustness: bin $(CNITOOL)
	$(PY) conformance/robustness.py

# Benchmarks print tables and write JSON reports under build/bench/.
bench: dist cnitool
	$(PY) conformance/bench.py
	$(PY) conformance/bench_ipam.py
	$(PY) conformance/bench_route.py
	$(PY) conformance/bench_one_plugin.py --bindir dist/cni-bin

clean:
	rm -rf $(BUILD) dist
