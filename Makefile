# s3mount: developer and install targets. Run `make` (or `make help`) for the list.
#
# Works as root on a fresh Debian 12 machine: the targets that need them install the
# system packages (apt) and the development virtualenv (.venv) first.

# --- Variables -------------------------------------------------------------------

PYTHON      ?= python3
VENV        ?= .venv
VENV_PY     := $(VENV)/bin/python
VENV_STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
LINT_PATHS  := s3mount tests scripts bench

PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
SBINDIR     ?= /sbin
LIBDIR      ?= $(PREFIX)/lib/s3mount
MANDIR      ?= $(PREFIX)/share/man
COMMANDS    := s3mount mount.s3mount s3mount-volume-driver

# Debian packages, installed only when missing: the libfuse 2 headers and pkg-config
# (llfuse is built from source), and the programs the tests run: s3fs (the s3fs-fuse
# interoperability tests), git, rsync and sqlite3 (programs inside a mount), attr
# (setfattr/getfattr), and mandoc, groff-base and man-db (the man page tests run
# mandoc -T lint, groff -ww and man -l; the unit file tests' systemd-analyze comes
# with Debian's systemd). system-deps also checks for fusermount (package fuse, or fuse3's
# compatible one), a C compiler, and the Python's venv module (python3-venv) and
# headers (python3-dev).
APT_PACKAGES   := libfuse-dev pkg-config s3fs git rsync sqlite3 attr mandoc groff-base man-db
APT_GET        := DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0
# Debian's python3 needs python3-venv for ensurepip, which `python3 -m venv` uses.
PY_HAS_VENV    := import ensurepip, venv
PY_HAS_HEADERS := import os, sys, sysconfig; \
	sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))

SHELL := /bin/bash

.DEFAULT_GOAL := help

.PHONY: help system-deps venv demo test test-long lint bench install uninstall clean

# --- Targets ---------------------------------------------------------------------

help: ## List the targets
	@echo "Usage: make TARGET [VARIABLE=value ...]"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z_-]*:.*## / {printf "  %-12s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)
	@echo
	@echo "Variables: PYTHON=$(PYTHON) VENV=$(VENV) PYTEST_ARGS='$(PYTEST_ARGS)'"
	@echo "           PREFIX=$(PREFIX) SBINDIR=$(SBINDIR)"

system-deps: ## Install the missing Debian packages (fuse, libfuse-dev, pkg-config, ...)
	@missing=""; \
	for package in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$package" 2>/dev/null | grep -q 'ok installed' \
			|| missing="$$missing $$package"; \
	done; \
	command -v fusermount >/dev/null 2>&1 || missing="$$missing fuse"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	if ! command -v $(PYTHON) >/dev/null 2>&1; then \
		missing="$$missing python3 python3-venv python3-dev"; \
	else \
		$(PYTHON) -c '$(PY_HAS_VENV)' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
		$(PYTHON) -c '$(PY_HAS_HEADERS)' || missing="$$missing python3-dev"; \
	fi; \
	if [ -n "$$missing" ]; then \
		echo "Installing the missing system packages:$$missing"; \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "error: run as root, or install them first: apt-get install$$missing" >&2; \
			exit 1; \
		fi; \
		$(APT_GET) update && $(APT_GET) install --no-install-recommends $$missing; \
	fi

venv: $(VENV_STAMP) ## Create .venv with s3mount installed editable, with its test extras

$(VENV_PY): | system-deps
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml changes (or the venv is new).
$(VENV_STAMP): pyproject.toml | system-deps $(VENV_PY)
	$(VENV_PY) -m pip install -e '.[test]'
	touch $@

demo: venv ## Mount a demo bucket on a local S3 server, look around, unmount
	VENV=$(VENV) bash scripts/demo.sh

# Two pytest workers (pytest-xdist): each has its own moto servers and mounts.
# TEST_WORKERS=0 runs the tests in one process.
TEST_WORKERS ?= 2

test: venv ## Run the test suite except the long tests (PYTEST_ARGS="-k foo" passes on)
	$(VENV_PY) -m pytest -m "not long" -n $(TEST_WORKERS) $(PYTEST_ARGS)

# pytest exits 5 when no test was collected: not a failure while there are none.
test-long: venv ## Run the long soak and fault tests
	@status=0; \
	echo '$(VENV_PY) -m pytest -m long $(PYTEST_ARGS)'; \
	$(VENV_PY) -m pytest -m long $(PYTEST_ARGS) || status=$$?; \
	if [ "$$status" -eq 5 ]; then echo "no long tests collected: OK"; status=0; fi; \
	exit $$status

lint: venv ## Check the code with ruff
	$(VENV)/bin/ruff check $(LINT_PATHS)

# BENCH_ARGS passes options on, e.g. BENCH_ARGS="--quick" (see bench/README.md).
bench: venv ## Benchmark s3mount (and s3fs when installed) on a local S3 server
	$(VENV_PY) bench/run.py $(BENCH_ARGS)

install: system-deps ## Install for the system under PREFIX (a venv in PREFIX/lib/s3mount)
	$(PYTHON) -m venv $(LIBDIR)
	$(LIBDIR)/bin/python -m pip install .
	mkdir -p $(BINDIR) $(SBINDIR)
	for command in $(COMMANDS); do \
		ln -sfn $(LIBDIR)/bin/$$command $(BINDIR)/$$command || exit 1; \
	done
	ln -sfn $(LIBDIR)/bin/mount.s3mount $(SBINDIR)/mount.s3mount
	@set -e; for section in 1 8; do \
		for page in man/*.$$section; do \
			[ -e "$$page" ] || continue; \
			echo "install -D -m 0644 $$page $(MANDIR)/man$$section/$${page##*/}"; \
			install -D -m 0644 "$$page" "$(MANDIR)/man$$section/$${page##*/}"; \
		done; \
	done

uninstall: ## Remove what install put in place
	for command in $(COMMANDS); do rm -f $(BINDIR)/$$command; done
	rm -f $(SBINDIR)/mount.s3mount
	@for section in 1 8; do \
		for page in man/*.$$section; do \
			[ -e "$$page" ] || continue; \
			echo "rm -f $(MANDIR)/man$$section/$${page##*/}"; \
			rm -f "$(MANDIR)/man$$section/$${page##*/}"; \
		done; \
	done
	rm -rf $(LIBDIR)

clean: ## Remove .venv, build output and caches
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .ruff_cache
	find s3mount tests scripts -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
