# The two commands of the README: `make demo` and `make test`. Each does all set-up itself
# and is idempotent: system libraries (apt-get, only when root and missing), a virtual
# environment in .venv, and the project installed into it in editable mode.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SYSTEM_PACKAGES := libusb-1.0-0 libgl1 libegl1 libvulkan1 mesa-vulkan-drivers xvfb
DEMO_DIR ?= work/demo
DEMO_CONFIG ?= configs/centerpoint_synthetic_cpu.yaml

.PHONY: demo test setup system-libraries clean

setup: system-libraries $(INSTALLED)

system-libraries:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing system libraries:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	fi

$(INSTALLED): setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]'
	touch $@

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

demo: setup
	$(PY) tools/demo.py --out $(DEMO_DIR) --config $(DEMO_CONFIG)

clean:
	rm -rf $(VENV) work *.egg-info
