# Standalone environment (no ROS distro needed): everything lives in .venv/.
VENV := $(CURDIR)/.venv
export AMENT_PREFIX_PATH := $(VENV)
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup setup-test demo test lint clean

setup:
	@bash tools/setup_standalone.sh

setup-test:
	@bash tools/setup_standalone.sh --test

demo: setup
	@$(VENV)/bin/python tools/demo.py --output-dir out/demo

test: setup-test
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup-test
	@$(VENV)/bin/python -m flake8

clean:
	rm -rf $(VENV) build install log out
