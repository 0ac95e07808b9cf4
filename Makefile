# Flux-Gate: build the nginx module and the worker, run the stack, test it.
#
#   make          build build/ngx_fluxgate_module.so, build/fluxgate-worker
#                 and build/fluxgate-reconcile
#   make run      start the whole stack in the foreground (Ctrl-C stops it)
#   make up/down  the same stack in the background / stop it
#   make run-dir  print the stack's run directory (its env file is
#                 `$(make -s run-dir)/env`)
#   make test     build (with ASan+UBSan), start an isolated stack on free
#                 ports, prove t/; SANITIZE=0 tests the plain build instead;
#                 then the fleet faults (t/7xx-fleet-*.t) on a stack of 3
#                 brokers, 2 gates and 2 workers (alone: make test-fleet)
#   make deb      the Debian packages in build/deb/ (debian/, dh_nginx),
#                 checked by lintian
#
# Every target that needs packages or the Kafka jars runs scripts/setup.sh
# first; it is quiet when everything is installed.

ROOT      := $(CURDIR)
BUILD     := $(ROOT)/build
NGX_SRC   ?= /usr/share/nginx/src
NGX_BUILD := $(BUILD)/nginx
MODULE    := $(BUILD)/ngx_fluxgate_module.so
WORKER    := $(BUILD)/fluxgate-worker
# make run's directory: .run in the checkout, unless nginx's workers and
# PostgreSQL (users nobody, postgres) cannot walk into the checkout, as in a
# clone under /root (mode 0700): then one under /var/tmp named after it
ifndef RUN_DIR
RUN_DIR   := $(shell if [ "$$(id -u)" != 0 ] || runuser -u nobody -- test -x '$(ROOT)' 2>/dev/null; \
                 then echo '$(ROOT)/.run'; \
                 else echo "/var/tmp/fluxgate-run-$$(printf %s '$(ROOT)' | md5sum | cut -c1-8)"; fi)
endif

# our own code is held to these; nginx's configure adds its own -W flags
FG_CFLAGS := -O2 -g -fPIC -Wall -Wextra -Werror -Wno-unused-parameter

MODULE_SRCS := $(wildcard ngx_fluxgate_module/*.c ngx_fluxgate_module/*.h) \
               $(wildcard include/*.h) \
               $(wildcard lua/*.lua lua/lib/*.lua) lua/expand.sh lua/header.sh \
               config

# make test runs the suite against the module and the worker built with
# AddressSanitizer and UndefinedBehaviorSanitizer in build/san.  Debian's
# nginx binary is not instrumented, so the ASan runtime is preloaded into it.
SANITIZE  ?= 1
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
             -fno-omit-frame-pointer
SAN_BUILD := $(BUILD)/san
ifeq ($(SANITIZE),1)
TEST_ENV  := FG_MODULE=$(SAN_BUILD)/ngx_fluxgate_module.so \
             FG_WORKER=$(SAN_BUILD)/fluxgate-worker \
             FG_RECONCILE=$(SAN_BUILD)/fluxgate-reconcile \
             FG_LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
             FG_SANITIZE=1
TEST_DEPS := all san fuzzers test-tools
else
TEST_DEPS := all worker-tests module-tests include-tests fuzzers test-tools
endif

# libFuzzer targets: the order/admin body parser and the buyer's JWT check
# of the module, and the worker's message parser, all pure C over jansson
# (and OpenSSL's HMAC for the JWT).  Seeds and every input
# that once crashed live in t/fuzz/<target>/ (run as regressions by the
# suite); the growing corpus lives in build/fuzz/.
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Iinclude \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZERS      := $(FUZZ_DIR)/fuzz_parse $(FUZZ_DIR)/fuzz_message \
                $(FUZZ_DIR)/fuzz_jwt
FUZZ_SECONDS ?= 300

#   make bench    the benchmarks against a private stack (bench/run)
.PHONY: all setup module worker reconcile worker-tests module-tests include-tests san fuzzers fuzz bench run up down run-dir test test-fleet clean \
        test-tools \
        distclean deb setup-deb

LOADGEN   := $(BUILD)/fg-loadgen
BARE      := $(BUILD)/fg-bare
# the suite's drain barrier (t/tools/drained.c, FluxGate::Test::drained)
DRAINED   := $(BUILD)/fg-drained

all: module worker reconcile $(LOADGEN) $(BARE)

# the HTTP client of the crowd tests and the benchmarks (OpenSSL: the
# waiting room's proof of work)
LOADGEN_SRC := bench/loadgen.c bench/loadgen_opts.c bench/loadgen_http.c \
               bench/loadgen_queue.c bench/loadgen_report.c bench/series.c
$(LOADGEN): $(LOADGEN_SRC) bench/loadgen.h bench/series.h
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -o $@ \
	    $(LOADGEN_SRC) -lcrypto

# the accept path without the gate: order.lua and a produce with the
# gate's producer settings, for make bench's share of the gate (bench/bare.c)
$(BARE): bench/bare.c bench/series.c bench/series.h
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -o $@ \
	    bench/bare.c bench/series.c \
	    $$(pkg-config --cflags --libs hiredis rdkafka)

# tools only the suite uses
test-tools: setup $(DRAINED)

$(DRAINED): t/tools/drained.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -o $@ $< \
	    $$(pkg-config --cflags --libs rdkafka)

setup:
	@bash scripts/setup.sh

module: setup $(MODULE)

# the two programs, each from its own folder (both link common/);
# WORKER_CFLAGS_EXTRA (make san: the sanitizers) goes to both
worker: setup
	@$(MAKE) --no-print-directory -C worker OUT=$(BUILD) CFLAGS_EXTRA="$(WORKER_CFLAGS_EXTRA)"

reconcile: setup
	@$(MAKE) --no-print-directory -C reconcile OUT=$(BUILD) CFLAGS_EXTRA="$(WORKER_CFLAGS_EXTRA)"

# the worker's C unit tests, beside the worker they test (t/405, t/406)
worker-tests: setup
	@$(MAKE) --no-print-directory -C worker OUT=$(BUILD) CFLAGS_EXTRA="$(WORKER_CFLAGS_EXTRA)" tests

# the module's C unit tests, of its pure parts (no nginx headers), beside
# the code they test; TAP on stdout, run by t/105-jwt.t.  `make san` builds
# them sanitized into build/san/module-tests/, as the module.
MODULE_TESTS := $(BUILD)/module-tests/test_jwt

module-tests: setup $(MODULE_TESTS)

$(BUILD)/module-tests/test_jwt: ngx_fluxgate_module/test_jwt.c \
        ngx_fluxgate_module/ngx_fluxgate_jwt.c ngx_fluxgate_module/ngx_fluxgate_jwt.h \
        include/fluxgate_ids.h include/test_tap.h
	@mkdir -p $(@D)
	@echo "  CCLD    $@"
	@$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Iinclude \
	    $$(pkg-config --cflags jansson libcrypto) $(MODULE_CFLAGS_EXTRA) \
	    -o $@ $(filter %.c,$^) $(MODULE_LDFLAGS_EXTRA) \
	    $$(pkg-config --libs jansson libcrypto)

# the C unit tests of include/'s headers (pure C, header only, shared by
# the module and the programs), beside the headers they test; TAP on
# stdout, run by t/700-cluster-slot.t and t/207-shuffle.t.  make san
# builds them sanitized into build/san/include-tests/, as the module.
INCLUDE_TESTS := $(BUILD)/include-tests/test_slot \
                 $(BUILD)/include-tests/test_shuffle

include-tests: setup $(INCLUDE_TESTS)

# the Redis Cluster slot function: nothing else linked
$(BUILD)/include-tests/test_slot: include/test_slot.c include/fluxgate_slot.h \
        include/test_tap.h
	@mkdir -p $(@D)
	@echo "  CCLD    $@"
	@$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Iinclude \
	    $(MODULE_CFLAGS_EXTRA) -o $@ $(filter %.c,$^) $(MODULE_LDFLAGS_EXTRA)

# the pre-queue's shuffle: OpenSSL's SHA-1 (and libm for its statistics)
$(BUILD)/include-tests/test_shuffle: include/test_shuffle.c \
        include/fluxgate_shuffle.h include/test_tap.h
	@mkdir -p $(@D)
	@echo "  CCLD    $@"
	@$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Iinclude \
	    $$(pkg-config --cflags libcrypto) $(MODULE_CFLAGS_EXTRA) \
	    -o $@ $(filter %.c,$^) $(MODULE_LDFLAGS_EXTRA) \
	    $$(pkg-config --libs libcrypto) -lm

# nginx-dev ships the configured source tree of Debian's nginx; a dynamic
# module built from it with the same flags (--with-compat) loads into the
# packaged binary.  We configure a private copy so nothing under /usr changes.
$(NGX_BUILD)/Makefile: config $(wildcard lua/*.lua lua/lib/*.lua) lua/expand.sh \
        lua/header.sh | $(NGX_SRC)/configure
	@rm -rf $(NGX_BUILD)
	@mkdir -p $(BUILD)
	@cp -a $(NGX_SRC) $(NGX_BUILD)
	@cd $(NGX_BUILD) && bash -c '. ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(FG_CFLAGS) $(MODULE_CFLAGS_EXTRA)" \
	        --with-ld-opt="$(MODULE_LDFLAGS_EXTRA)" \
	        --add-dynamic-module=$(ROOT)' > $(BUILD)/configure.log 2>&1 \
	    || { cat $(BUILD)/configure.log; exit 1; }

$(NGX_SRC)/configure:
	@bash scripts/setup.sh

$(MODULE): $(NGX_BUILD)/Makefile $(MODULE_SRCS)
	@$(MAKE) --no-print-directory -C $(NGX_BUILD) -f objs/Makefile modules \
	    > $(BUILD)/module.log 2>&1 || { cat $(BUILD)/module.log; exit 1; }
	@# a new inode, never overwritten in place: a running nginx maps this
	@# file, and rewriting it under its workers crashes them
	@# (and only when it changed: a kept test stack restarts what was rebuilt)
	@if cmp -s $(NGX_BUILD)/objs/ngx_fluxgate_module.so $@; then :; \
	else cp $(NGX_BUILD)/objs/ngx_fluxgate_module.so $@.tmp && mv -f $@.tmp $@ \
	    && echo "built $@"; fi

fuzzers: setup $(FUZZERS)

$(FUZZ_DIR)/fuzz_parse: ngx_fluxgate_module/fuzz_parse.c \
        ngx_fluxgate_module/ngx_fluxgate_parse.c ngx_fluxgate_module/ngx_fluxgate_parse.h \
        include/fluxgate_ids.h
	@mkdir -p $(FUZZ_DIR)
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) -ljansson

$(FUZZ_DIR)/fuzz_message: worker/fuzz_message.c worker/message.c worker/message.h \
        include/fluxgate_ids.h
	@mkdir -p $(FUZZ_DIR)
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) -ljansson

$(FUZZ_DIR)/fuzz_jwt: ngx_fluxgate_module/fuzz_jwt.c \
        ngx_fluxgate_module/ngx_fluxgate_jwt.c ngx_fluxgate_module/ngx_fluxgate_jwt.h \
        include/fluxgate_ids.h
	@mkdir -p $(FUZZ_DIR)
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) -ljansson -lcrypto

# make fuzz FUZZ_SECONDS=3600: each target for that long; a crash leaves its
# input in build/fuzz/crash-*: copy it to t/fuzz/<target>/ to keep it
fuzz: fuzzers
	@for f in $(FUZZERS); do \
	    t=$$(basename $$f); \
	    mkdir -p $(FUZZ_DIR)/corpus-$$t; \
	    echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus-$$t t/fuzz/$$t \
	        > $(FUZZ_DIR)/$$t.log 2>&1; rc=$$?; \
	    grep -E '^(stat::number_of_executed_units|stat::peak_rss|SUMMARY)' \
	        $(FUZZ_DIR)/$$t.log; \
	    if [ $$rc -ne 0 ]; then tail -40 $(FUZZ_DIR)/$$t.log; exit 1; fi; \
	done

# make deb: the two packages, built by Debian's tools from debian/ in a copy
# of the sources under build/deb/ (dpkg-buildpackage writes next to the
# tree it builds, and the checkout stays clean), then lintian.  The plain
# build: these run in the system's nginx, which no sanitizer runtime is
# preloaded into.  The Dockerfile's build stage runs the same two commands
# (scripts/setup.sh deb, make deb).
DEB_DIR     := $(BUILD)/deb
DEB_VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
DEB_ARCH    := $(shell dpkg --print-architecture)
DEB_TREE    := $(DEB_DIR)/fluxgate-$(DEB_VERSION)
DEB_INPUTS  := config README.md docs debian include ngx_fluxgate_module lua common worker \
               reconcile sql conf
DEBS        := $(DEB_DIR)/libnginx-mod-http-fluxgate_$(DEB_VERSION)_$(DEB_ARCH).deb \
               $(DEB_DIR)/fluxgate-worker_$(DEB_VERSION)_$(DEB_ARCH).deb

deb: setup-deb $(DEBS)

setup-deb:
	@bash scripts/setup.sh deb

$(DEBS) &: $(shell find $(DEB_INPUTS) -type f)
	@rm -rf $(DEB_DIR)
	@mkdir -p $(DEB_TREE)
	@tar -C $(ROOT) -cf - $(DEB_INPUTS) | tar -C $(DEB_TREE) -xf -
	@echo "deb: dpkg-buildpackage in $(DEB_TREE) (log: $(DEB_DIR)/build.log)"
	@cd $(DEB_TREE) && dpkg-buildpackage -b --no-sign > $(DEB_DIR)/build.log 2>&1 \
	    || { tail -40 $(DEB_DIR)/build.log; exit 1; }
	@echo "deb: lintian"
	@lintian --fail-on error --display-level '>=warning' $(DEBS) \
	    > $(DEB_DIR)/lintian.log 2>&1; rc=$$?; cat $(DEB_DIR)/lintian.log; \
	    [ $$rc -eq 0 ] || { rm -f $(DEBS); exit 1; }
	@ls -1 $(DEBS)

bench: all
	@bash bench/run

# the demo shop at / has its product on sale (FG_DEMO, scripts/stack)
run: all
	@FG_DEMO=1 bash scripts/stack run $(RUN_DIR)

up: all
	@FG_DEMO=1 bash scripts/stack up $(RUN_DIR)

down:
	@bash scripts/stack down $(RUN_DIR)

# where make run keeps the stack: another shell reaches it with
#   . "$$(make -s run-dir)/env"
run-dir:
	@echo '$(RUN_DIR)'

san: setup
	@$(MAKE) --no-print-directory BUILD=$(SAN_BUILD) SANITIZE=0 \
	    MODULE_CFLAGS_EXTRA="$(SAN_FLAGS) -DNGX_FLUXGATE_TESTING=1" \
	    MODULE_LDFLAGS_EXTRA="$(SAN_FLAGS)" \
	    WORKER_CFLAGS_EXTRA="$(SAN_FLAGS)" module worker reconcile worker-tests \
	    module-tests include-tests

# the suite on one stack, then the fleet faults (t/7xx-fleet-*.t) on a stack of three
# Kafka brokers, two gates and two workers
# two prove runs: t/ on a single stack (the t/7xx-fleet-*.t files skip
# there), then the fleet faults on a fleet stack; the last line says both ran
test: $(TEST_DEPS)
	@$(TEST_ENV) bash t/run
	@$(TEST_ENV) FG_FLEET=1 bash t/run
	@echo "make test: PASS: the selected t/ files on a single stack, then t/7xx-fleet-*.t on a fleet stack (prove's two summaries above)"

test-fleet: $(TEST_DEPS)
	@$(TEST_ENV) FG_FLEET=1 bash t/run

clean:
	rm -rf $(BUILD)
	@$(MAKE) --no-print-directory -C worker clean OUT=$(BUILD) >/dev/null
	@$(MAKE) --no-print-directory -C reconcile clean OUT=$(BUILD) >/dev/null

distclean: clean
	rm -rf .cache .run
