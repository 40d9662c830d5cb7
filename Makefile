# cubby: two commands matter.
#   make run       installs what is missing, builds the binaries, makes a small image offline and runs a real box
#   make test      builds everything and runs every test
# and one more:
#   make binaries  builds only what cubby runs (cubby, its shim, agent, fetch helper, server, OCI runtime,
#                  the vm guest's initramfs): no tests, no fuzz target
BUILD ?= build
JOBS ?= $(shell nproc)
CUBBY = $(BUILD)/bin/cubby
DEMO_HOME = $(BUILD)/demo-home

.PHONY: all deps configure build binaries run test unit-test bench clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The targets a user runs, and what they pull in (cubby-cli: shim, agent, fetch, serve).
binaries: configure
	@cmake --build $(BUILD) -j $(JOBS) --target cubby-cli cubby-runc cubby-vm-assets

$(BUILD)/busybox-rootfs.tar: scripts/mkimage.sh
	@mkdir -p $(BUILD) && scripts/mkimage.sh $@

run: binaries $(BUILD)/busybox-rootfs.tar
	@$(CUBBY) --home $(DEMO_HOME) images -q | grep -q . || $(CUBBY) --home $(DEMO_HOME) import $(BUILD)/busybox-rootfs.tar busybox >/dev/null
	$(CUBBY) --home $(DEMO_HOME) run --rm --network none busybox sh -c 'echo "hello from box $$(hostname): $$(id)"; ps'

test: build
	@cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600

bench: binaries $(BUILD)/busybox-rootfs.tar
	bench/run_vs_peers.sh $(BUILD)

clean:
	rm -rf $(BUILD)
