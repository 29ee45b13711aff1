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
#   make install    portable build (ARCH=-march=native to ask for this CPU's), then install bin,
#                   lib (.a, .so), include and lib/pkgconfig/fastrope.pc under PREFIX (/usr/local)

CC ?= cc
PYTHON ?= /usr/bin/python3
PREFIX ?= /usr/local
# The binary is built where it runs; ARCH= (empty) for a portable build. `make install` builds
# portable code (in build-install/) unless ARCH is given on its command line or environment.
ARCH ?= -march=native
INSTALL_ARCH := $(if $(filter command line environment,$(origin ARCH)),$(ARCH),)
VERSION := $(shell sed -n 's/^\#define FR_VERSION "\(.*\)"/\1/p' core/fastrope.h)

# The core (libfastrope) needs only CORE_PKGS; io and the command the rest.
CORE_PKGS := kissfft-float fftw3 fftw3f
PKGS := $(CORE_PKGS) libcjson libzip zlib
# The public headers: the user API and the planner tier beside it.
PUBLIC_H := $(wildcard core/fastrope.h core/fastrope_*.h)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# -fno-math-errno lets the compiler call glibc's vector exp (libmvec); NaN semantics stay
# intact (no -ffast-math), which the input checks rely on.
# kissfft's warning set, less -Waggregate-return (the API returns small structs by value) and,
# until the files where they still fire are clean, -Wcast-qual and -Wwrite-strings.
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wcast-align \
	-Wbad-function-cast -Wnested-externs -Wpointer-arith
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -fopenmp -fno-math-errno $(WARN) -Icore -Iio
# Each object depends on the headers it includes (and builds survive a header's removal), and
# on this Makefile: its flags change the code.
DEPFLAGS = -MMD -MP -MT $@ -MF $@.d
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
CORE_PIC := $(CORE_SRC:%.c=$(B)/pic/%.o)
IO_OBJ := $(IO_SRC:%.c=$(B)/%.o)
CMD_OBJ := $(CMD_SRC:%.c=$(B)/%.o)

C_TESTS := $(patsubst %.c,$(B)/tests/%,$(wildcard core/*_test.c io/*_test.c cmd/*_test.c))
PY_TESTS := $(sort $(wildcard core/*_test.py io/*_test.py cmd/*_test.py scripts/*_test.py))

.PHONY: all deps demo test bench reproduce install install-files clean format fuzz
all: $(B)/fastrope $(B)/libfastrope.a $(B)/libfastrope.so $(C_TESTS)

deps:
	@sh scripts/deps.sh

$(B)/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(B)/libfastrope.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The shared library (for ctypes, and for programs linking -lfastrope) from position-independent
# copies of the core's objects, so that the static library and the binary keep the code the
# benchmarks measured. Only the public API is exported: fr_ names, not the core's fr__ ones.
$(B)/pic/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC $(DEPFLAGS) -c $< -o $@

$(B)/libfastrope.map: Makefile
	@mkdir -p $(dir $@)
	printf '{\n  global: fr_[a-zA-Z0-9]*;\n  local: *;\n};\n' > $@

$(B)/libfastrope.so: $(CORE_PIC) $(B)/libfastrope.map
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,libfastrope.so.0 \
	  -Wl,--version-script=$(B)/libfastrope.map $(CORE_PIC) -o $@ $(PKG_LIBS) -lm $(LDLIBS)

$(B)/libfrio.a: $(IO_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/fastrope: $(CMD_OBJ) $(B)/libfrio.a $(B)/libfastrope.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS_ALL)

$(B)/tests/%: %.c $(B)/libfrio.a $(B)/libfastrope.a Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) $< $(B)/libfrio.a $(B)/libfastrope.a -o $@ $(LDLIBS_ALL)

# The fuzz targets' replay (every file of testdata/fuzz/) includes cmd/args_fuzz.c, so it links
# the command's files too (all but main). Their entry points are called by libFuzzer's driver
# and by this replay, which includes them: no header declares them.
$(B)/tests/io/fuzz_replay_test: io/fuzz_replay_test.c \
		$(filter-out $(B)/cmd/main.o,$(CMD_OBJ)) $(B)/libfrio.a $(B)/libfastrope.a Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes $(DEPFLAGS) -Icmd $< \
	  $(filter-out $(B)/cmd/main.o,$(CMD_OBJ)) $(B)/libfrio.a $(B)/libfastrope.a -o $@ $(LDLIBS_ALL)

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

# What is installed runs on other machines of the architecture: a build of its own, without
# -march=native (unless asked), so that `make` and `make bench` keep theirs.
install:
	@$(MAKE) --no-print-directory B=build-install ARCH='$(INSTALL_ARCH)' \
	  build-install/fastrope build-install/libfastrope.a build-install/libfastrope.so
	@$(MAKE) --no-print-directory B=build-install install-files

LIBDIR = $(PREFIX)/lib
install-files:
	install -D -m 755 $(B)/fastrope $(DESTDIR)$(PREFIX)/bin/fastrope
	install -D -m 644 $(B)/libfastrope.a $(DESTDIR)$(LIBDIR)/libfastrope.a
	install -D -m 755 $(B)/libfastrope.so $(DESTDIR)$(LIBDIR)/libfastrope.so.$(VERSION)
	ln -sf libfastrope.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libfastrope.so.0
	ln -sf libfastrope.so.0 $(DESTDIR)$(LIBDIR)/libfastrope.so
	for h in $(PUBLIC_H); do install -D -m 644 $$h $(DESTDIR)$(PREFIX)/include/$$(basename $$h); done
	@mkdir -p $(DESTDIR)$(LIBDIR)/pkgconfig
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' '' \
	  'Name: fastrope' \
	  'Description: RoPE attention, exact and in almost linear time (polynomial + FFT)' \
	  'Version: $(VERSION)' 'Requires.private: $(CORE_PKGS)' \
	  'Libs: -L$${libdir} -lfastrope' 'Libs.private: -lgomp -lm' 'Cflags: -I$${includedir}' \
	  > $(DESTDIR)$(LIBDIR)/pkgconfig/fastrope.pc

format:
	clang-format -i core/*.[ch] io/*.[ch] cmd/*.[ch]

clean:
	rm -rf build build-san build-fuzz build-install

-include $(shell find $(B) -name '*.d' 2>/dev/null)
