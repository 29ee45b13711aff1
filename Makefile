# fastrope: `make` builds build/fastrope; `make demo` and `make test` first install any missing
# Debian package (scripts/deps.sh), so that they work on a fresh machine.
#
#   make            build the binary, the static library and the tests
#   make demo       run the main job on a generated example and print the report
#   make test       build and run every test; ends with "N passed, N failed"
#   make test SAN=1 the same under AddressSanitizer and UndefinedBehaviorSanitizer (build-san/)
#   make bench      the benchmark scripts (slow: minutes)
#   make reproduce  the papers' error bounds and scaling, tables and plots (ARGS=--quick)
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (60) each; needs clang (installed)
#   make install PREFIX=/usr/local

CC ?= cc
PYTHON ?= /usr/bin/python3
PREFIX ?= /usr/local
# The binary is built where it runs; ARCH= (empty) for a portable build.
ARCH ?= -march=native

PKGS := kissfft-float libcjson libzip zlib
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# -fno-math-errno lets the compiler call glibc's vector exp (libmvec); NaN semantics stay
# intact (no -ffast-math), which the input checks rely on.
WARN := -Wall -Wextra -Wshadow -Wno-unused-parameter
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -fopenmp -fno-math-errno $(WARN) -Icore -Iio
ifeq ($(SAN),1)
B := build-san
OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined $(ARCH)
else
B := build
OPT := -O2 -ftree-vectorize $(ARCH)
endif
ALL_CFLAGS = $(CFLAGS_BASE) $(OPT) $(PKG_CFLAGS) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lm $(LDLIBS)

CORE_SRC := $(filter-out %_test.c,$(wildcard core/*.c))
IO_SRC := $(filter-out %_test.c %_fuzz.c,$(wildcard io/*.c))
CMD_SRC := $(filter-out %_test.c %_fuzz.c,$(wildcard cmd/*.c))
CORE_OBJ := $(CORE_SRC:%.c=$(B)/%.o)
IO_OBJ := $(IO_SRC:%.c=$(B)/%.o)
CMD_OBJ := $(CMD_SRC:%.c=$(B)/%.o)

C_TESTS := $(patsubst %.c,$(B)/tests/%,$(wildcard core/*_test.c io/*_test.c cmd/*_test.c))
PY_TESTS := $(sort $(wildcard core/*_test.py io/*_test.py cmd/*_test.py scripts/*_test.py))

.PHONY: all deps demo test bench reproduce install clean format fuzz
all: $(B)/fastrope $(B)/libfastrope.a $(C_TESTS)

deps:
	@sh scripts/deps.sh

$(B)/%.o: %.c $(wildcard core/*.h io/*.h cmd/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(B)/libfastrope.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/libfrio.a: $(IO_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/fastrope: $(CMD_OBJ) $(B)/libfrio.a $(B)/libfastrope.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS_ALL)

$(B)/tests/%: %.c $(B)/libfrio.a $(B)/libfastrope.a $(wildcard core/*.h io/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< $(B)/libfrio.a $(B)/libfastrope.a -o $@ $(LDLIBS_ALL)

# The fuzz targets' replay (every file of testdata/fuzz/) includes cmd/args_fuzz.c, so it links
# the command's files too (all but main).
$(B)/tests/io/fuzz_replay_test: io/fuzz_replay_test.c $(wildcard io/*_fuzz.c cmd/*_fuzz.c) \
		$(filter-out $(B)/cmd/main.o,$(CMD_OBJ)) $(B)/libfrio.a $(B)/libfastrope.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Icmd $< $(filter-out $(B)/cmd/main.o,$(CMD_OBJ)) $(B)/libfrio.a \
	  $(B)/libfastrope.a -o $@ $(LDLIBS_ALL)

# libFuzzer targets (clang, ASan+UBSan) for FUZZ_SECONDS each (60), FUZZ_JOBS at once (2);
# installs clang first. See scripts/fuzz.sh.
fuzz:
	@sh scripts/deps.sh fuzz
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) sh scripts/fuzz.sh $(FUZZ_TARGETS)

demo: deps
	@$(MAKE) --no-print-directory $(B)/fastrope
	$(B)/fastrope gen --n 4096 --d 4 --B 1 --seed 1 -o $(B)/demo.npz
	$(B)/fastrope run --input $(B)/demo.npz --rope -o $(B)/demo_out.npy --report -

test: deps
	@$(MAKE) --no-print-directory all
	@FASTROPE=$(CURDIR)/$(B)/fastrope FASTROPE_SAN=$(SAN) PYTHONPATH=$(CURDIR)/scripts \
	  sh scripts/runtests.sh $(PYTHON) $(C_TESTS) $(PY_TESTS)

bench: deps
	@$(MAKE) --no-print-directory $(B)/fastrope
	FASTROPE=$(CURDIR)/$(B)/fastrope PYTHON=$(PYTHON) sh scripts/bench.sh

reproduce: deps
	@$(MAKE) --no-print-directory $(B)/fastrope
	FASTROPE=$(CURDIR)/$(B)/fastrope PYTHON=$(PYTHON) sh scripts/reproduce.sh $(ARGS)

install: $(B)/fastrope $(B)/libfastrope.a
	install -D -m 755 $(B)/fastrope $(DESTDIR)$(PREFIX)/bin/fastrope
	install -D -m 644 $(B)/libfastrope.a $(DESTDIR)$(PREFIX)/lib/libfastrope.a
	install -D -m 644 core/fastrope.h $(DESTDIR)$(PREFIX)/include/fastrope.h

format:
	clang-format -i core/*.[ch] io/*.[ch] cmd/*.[ch]

clean:
	rm -rf build build-san build-fuzz
