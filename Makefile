# Model Hardening Lab: `make lab` to learn, `make test` to check everything.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LAB_ARGS ?=
# Tests train the zoo models into a cache inside the checkout, so every clean clone is
# tested from scratch and nothing leaks in from a user cache.
TEST_CACHE ?= $(CURDIR)/.cache/labkit
PYTEST_ARGS ?=
# jupyter refuses to run as root without --allow-root (containers, CI).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# Every install comes from uv.lock (see README "Installing"). The Makefile bootstraps this exact
# uv with pip into the venv; the lock pins uv too, so `uv sync` keeps it.
UV_VERSION := 0.13.9
# pip on some machines warns about every unreachable extra index; keep the log readable.
PIP_FILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }
UV := $(BIN)/uv
UV_SYNC_ARGS := --locked --extra test --extra peers --extra hub
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
.PHONY: help install lock lab lessons test lint format unit notebooks grading grader-deps browser browser-deps hub hub-deps hub-test web-tests cert-fonts bench clean

help:
	@echo "make lab    set up (venv, install, learner notebooks) and start JupyterLab on lessons/"
	@echo "make test   set up and run every check: lint, types, unit tests, notebooks, autograding"
	@echo "make lint   ruff (lint and format check), mypy, notebooks stored without outputs"
	@echo "make browser  JupyterLab in headless Chromium: lessons, nbgrader panel, lesson 00 runs"
	@echo "make hub    (root) a workshop on this machine: JupyterHub, accounts, nbgrader exchange"
	@echo "make lock   refresh uv.lock on purpose (then make test)"
	@echo "make bench  run the benchmarks in benchmarks/"

$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(UV) --version 2>/dev/null | grep -qF "uv $(UV_VERSION)" || { $(BIN)/python -m ensurepip --default-pip >/dev/null \
		&& $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)" 2>&1 | $(PIP_FILTER); }
	@echo "installing the locked environment (uv.lock) into $(VENV)"
	@$(UV) sync $(UV_SYNC_ARGS) --python $(BIN)/python
	@$(BIN)/python -c "import labkit, torch, torchvision, nbgrader"
	@touch $(STAMP)

install: $(STAMP)

# Refresh the lock on purpose (new versions from the registry), then run `make test`.
lock: $(STAMP)
	$(UV) lock --upgrade
	@echo "uv.lock refreshed: review the diff, run make test, and update the README's figures"

lessons: $(STAMP)
	$(BIN)/labkit build --missing

# The server's root is the course root, so nbgrader finds nbgrader_config.py and formgrader sees
# solutions/ below it; the learner lands on lessons/. The venv's bin/ goes on PATH for formgrader's
# call to alembic. nbgrader's exchange on one machine is .cache/nbgrader-exchange (nbgrader_config.py;
# LABKIT_EXCHANGE moves it), so the Assignments tab can fetch, submit and fetch feedback.
LAB_EXCHANGE = $(or $(LABKIT_EXCHANGE),$(CURDIR)/.cache/nbgrader-exchange)
lab: lessons
	@mkdir -p "$(LAB_EXCHANGE)"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/lessons $(ROOT_FLAG) $(LAB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check labkit tests benchmarks nbgrader_config.py conftest.py
	$(BIN)/ruff format --check labkit tests benchmarks nbgrader_config.py conftest.py
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_repo_hygiene.py

format: $(STAMP)
	$(BIN)/ruff format labkit tests benchmarks nbgrader_config.py conftest.py
	$(BIN)/ruff check --fix labkit tests benchmarks nbgrader_config.py conftest.py

# Certificates print Chinese, Japanese and Korean names with a system font (the PyPI fonts cover
# Latin, Vietnamese, Arabic and Devanagari). As root it is installed here when missing; elsewhere
# the Chinese-name test is skipped and says which package to install.
cert-fonts:
	@if [ ! -f /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf ] \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing fonts-droid-fallback (Debian) for certificates with CJK names"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q fonts-droid-fallback >/dev/null 2>&1 \
			|| { apt-get update -q >/dev/null && apt-get install -y -q fonts-droid-fallback >/dev/null; } \
			|| echo "could not install fonts-droid-fallback: the Chinese-name certificate test will be skipped"; \
	fi

# labkit grade runs learner code only inside bubblewrap (Debian package bubblewrap). As root it is
# installed here when missing; elsewhere the grading tests that need it are skipped and say why.
grader-deps:
	@if ! command -v bwrap >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing bubblewrap (Debian) for the grading sandbox"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -q bubblewrap >/dev/null 2>&1 \
				|| { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; } \
				|| echo "could not install bubblewrap: the sandboxed grading tests will be skipped"; \
		fi; \
	fi

unit: $(STAMP) cert-fonts grader-deps
	LABKIT_CACHE=$(TEST_CACHE) LABKIT_PROFILE=ci OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile \
		--doctest-modules labkit tests -m "not slow and not browser and not hub" --durations=10 $(PYTEST_ARGS)

notebooks: $(STAMP)
	LABKIT_CACHE=$(TEST_CACHE) LABKIT_PROFILE=ci MPLBACKEND=Agg OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 \
		--dist loadfile --nbval-lax solutions -p no:cacheprovider --durations=10 $(PYTEST_ARGS)

grading: $(STAMP) grader-deps
	LABKIT_CACHE=$(TEST_CACHE) LABKIT_PROFILE=ci MPLBACKEND=Agg OMP_NUM_THREADS=1 $(BIN)/python -m pytest \
		-m slow -n 2 --dist worksteal -rA --show-capture=stdout --durations=30 tests $(PYTEST_ARGS)

# The browser test drives JupyterLab in headless Chromium from the Debian packages. As root
# they are installed here when missing; elsewhere the test is skipped and says how to get them.
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium and chromium-driver (Debian) for the browser test"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
				|| { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } \
				|| echo "could not install chromium: the browser test will be skipped"; \
		fi; \
	fi

browser: $(STAMP) browser-deps
	LABKIT_CACHE=$(TEST_CACHE) LABKIT_PROFILE=ci $(BIN)/python -m pytest -q -rs -m browser -p no:cacheprovider \
		tests/test_browser.py $(PYTEST_ARGS)

# A workshop on one machine (README, "Workshops"): JupyterHub's proxy from npm, pinned by
# deploy/hub/package-lock.json, goes into .cache/node; `make hub` (as root) creates the accounts,
# the instructor's course, the exchange and the shared model cache under HUB_DIR and runs the hub.
HUB_DIR ?= /srv/mhl-hub
HUB_ARGS ?= --learners 3
hub-deps:
	@if [ ! -x .cache/node/node_modules/.bin/configurable-http-proxy ] && command -v npm >/dev/null; then \
		echo "installing configurable-http-proxy (npm, deploy/hub/package-lock.json) into .cache/node"; \
		mkdir -p .cache/node && cp deploy/hub/package.json deploy/hub/package-lock.json .cache/node/ \
			&& npm ci --prefix .cache/node --no-audit --no-fund --loglevel=error >/dev/null \
			|| echo "could not install JupyterHub's proxy: the hub test will be skipped"; \
	fi

hub: $(STAMP) hub-deps
	$(BIN)/python -m labkit.course.hub up --hub-dir $(HUB_DIR) $(HUB_ARGS)

# The workshop round trip in headless Chromium (tests/test_hub.py): root, Chromium and the proxy,
# else skipped with the reason.
hub-test: $(STAMP) browser-deps hub-deps
	LABKIT_CACHE=$(TEST_CACHE) LABKIT_PROFILE=ci $(BIN)/python -m pytest -q -rs -m hub -p no:cacheprovider \
		tests/test_hub.py $(PYTEST_ARGS)

# The browser and hub tests mostly wait (servers, Chromium, the exchange), so they run beside the
# autograding stage; their output is kept in .cache/web-tests.log and printed when both are done.
# The system packages they need are installed first, one apt-get at a time.
WEB_LOG := .cache/web-tests.log
test: lint
	LABKIT_CACHE=$(TEST_CACHE) LABKIT_PROFILE=ci $(BIN)/labkit pretrain --quiet
	@$(MAKE) --no-print-directory unit notebooks
	@$(MAKE) --no-print-directory grader-deps browser-deps hub-deps
	@mkdir -p .cache; echo "browser and hub tests: running beside autograding, output in $(WEB_LOG)"; \
	$(MAKE) --no-print-directory web-tests > $(WEB_LOG) 2>&1 & web=$$!; \
	status=0; $(MAKE) --no-print-directory grading || status=$$?; \
	wait $$web || status=$$?; \
	echo "---- browser and hub tests (beside autograding) ----"; cat $(WEB_LOG); exit $$status

web-tests: browser hub-test

bench: $(STAMP)
	LABKIT_CACHE=$(TEST_CACHE) $(BIN)/python benchmarks/run.py
	LABKIT_CACHE=$(TEST_CACHE) $(BIN)/python benchmarks/attacks.py

clean:
	rm -rf .cache .pytest_cache .mypy_cache .ruff_cache gradebook.db
