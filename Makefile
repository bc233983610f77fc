# Standalone environment (no ROS distro needed): ROS 2 Kilted in .venv/; the Jazzy test tier
# in .venv-jazzy/.
VENV := $(CURDIR)/.venv
JAZZY_VENV := $(CURDIR)/.venv-jazzy
export AMENT_PREFIX_PATH := $(VENV)
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

# Test files run in parallel worker processes (pytest-xdist), a whole file on one worker, the
# longest first (test/conftest.py's LONGEST_FILES); PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
PYTEST_KILTED = AMENT_PREFIX_PATH=$(VENV) $(VENV)/bin/python -m pytest $(PYTEST_PARALLEL) \
	$(PYTEST_ARGS)
PYTEST_JAZZY = AMENT_PREFIX_PATH=$(JAZZY_VENV) $(JAZZY_VENV)/bin/python -m pytest --ros-only \
	$(PYTEST_PARALLEL) $(PYTEST_ARGS)

.PHONY: setup setup-test setup-test-jazzy demo test test-jazzy lint clean

setup:
	@bash tools/setup_standalone.sh

setup-test:
	@bash tools/setup_standalone.sh --test

setup-test-jazzy:
	@bash tools/setup_standalone.sh --test --jazzy

DEMO_OUTPUT ?= out/demo

demo: setup
	@$(VENV)/bin/python tools/demo.py --output-dir $(DEMO_OUTPUT)

# Every test under Kilted, then the ROS-facing ones under Jazzy; fails if either tier fails.
# Exit code 5 (nothing ROS-facing among the tests PYTEST_ARGS chose) is no failure.
test: setup-test setup-test-jazzy
	@status=0; \
	echo 'make test: ROS 2 Kilted, every test (.venv)'; \
	$(PYTEST_KILTED) || status=$$?; \
	echo 'make test: ROS 2 Jazzy, the ROS-facing tests (.venv-jazzy)'; \
	$(PYTEST_JAZZY) || { code=$$?; [ $$code = 5 ] && [ -n "$(PYTEST_ARGS)" ] || status=$$code; }; \
	exit $$status

test-jazzy: setup-test-jazzy
	@$(PYTEST_JAZZY)

lint: setup-test
	@$(VENV)/bin/python -m flake8

clean:
	rm -rf $(VENV) $(JAZZY_VENV) build install log out
