# cubby: two commands matter.
#   make run    installs what is missing, builds, makes a small image offline and runs a real box
#   make test   builds and runs every test
BUILD ?= build
JOBS ?= $(shell nproc)
CUBBY = $(BUILD)/bin/cubby
DEMO_HOME = $(BUILD)/demo-home

.PHONY: all deps build run test unit-test bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

$(BUILD)/busybox-rootfs.tar: scripts/mkimage.sh
	@mkdir -p $(BUILD) && scripts/mkimage.sh $@

run: build $(BUILD)/busybox-rootfs.tar
	@$(CUBBY) --home $(DEMO_HOME) images -q | grep -q . || $(CUBBY) --home $(DEMO_HOME) import $(BUILD)/busybox-rootfs.tar busybox >/dev/null
	$(CUBBY) --home $(DEMO_HOME) run --rm --network none busybox sh -c 'echo "hello from box $$(hostname): $$(id)"; ps'

test: build
	@cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600

bench: build $(BUILD)/busybox-rootfs.tar
	bench/run_vs_peers.sh $(BUILD)

clean:
	rm -rf $(BUILD)
