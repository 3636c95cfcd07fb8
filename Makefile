# Install tree for C, C++, pkg-config and CMake consumers:
#   make install PREFIX=/usr/local        (DESTDIR is honoured for packaging)
# Installs lib/libllmint8.so.<version> with its SONAME link libllmint8.so.1 and
# the development link libllmint8.so, include/llmint8.h and llmint8.hpp,
# lib/pkgconfig/llmint8.pc (its Libs carry an rpath to lib/, so a program
# linked through it finds the library at run time) and lib/cmake/llmint8/ (find_package(llmint8) gives
# the imported target llmint8::llmint8), the command-line tool bin/llmint8,
# and the licenses in share/doc/llmint8. Cargo's CARGO_TARGET_DIR is honoured
# (the build and the installed files come from there); LIBDIR may be any
# folder (lib64 and the like): the CMake package finds the library beside it.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DOCDIR ?= $(PREFIX)/share/doc/llmint8
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
ABI := $(shell sed -n 's/^abi-version = \([0-9]*\)$$/\1/p' Cargo.toml)
RELEASE := $(or $(CARGO_TARGET_DIR),target)/release
# The include folder as seen from the installed CMake package's folder.
INCLUDEDIR_FROM_CMAKE := $(shell realpath -m --relative-to=$(LIBDIR)/cmake/llmint8 $(INCLUDEDIR))

.PHONY: build install

build:
	cargo build --release --locked

install: build
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(LIBDIR)/cmake/llmint8 $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR)
	install -m 755 $(RELEASE)/llmint8 $(DESTDIR)$(BINDIR)/llmint8
	install -m 755 $(RELEASE)/libllmint8.so $(DESTDIR)$(LIBDIR)/libllmint8.so.$(VERSION)
	# The release profile keeps debug info for profiling; the installed copies do not.
	strip --strip-debug $(DESTDIR)$(LIBDIR)/libllmint8.so.$(VERSION) $(DESTDIR)$(BINDIR)/llmint8
	ln -sf libllmint8.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libllmint8.so.$(ABI)
	ln -sf libllmint8.so.$(ABI) $(DESTDIR)$(LIBDIR)/libllmint8.so
	install -m 644 include/llmint8.h bindings/cpp/llmint8.hpp $(DESTDIR)$(INCLUDEDIR)/
	install -d $(DESTDIR)$(DOCDIR)
	install -m 644 LICENSE-MIT LICENSE-APACHE README.md $(DESTDIR)$(DOCDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' packaging/llmint8.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/llmint8.pc
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@ABI@|$(ABI)|g' -e 's|@INCLUDEDIR_FROM_CMAKE@|$(INCLUDEDIR_FROM_CMAKE)|g' \
	    packaging/llmint8Config.cmake.in \
	    > $(DESTDIR)$(LIBDIR)/cmake/llmint8/llmint8Config.cmake
	sed -e 's|@VERSION@|$(VERSION)|g' packaging/llmint8ConfigVersion.cmake.in \
	    > $(DESTDIR)$(LIBDIR)/cmake/llmint8/llmint8ConfigVersion.cmake
