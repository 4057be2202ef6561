# Apus: the README's two commands are `make serve` and `make test`.
# Both run the same idempotent set-up first: system packages, models, release build.

SWIFT        ?= swift
PYTHON       ?= python3
HOST         ?= 0.0.0.0
PORT         ?= 8080
APT_PACKAGES := libopenblas-dev libnghttp2-dev libssl-dev pkg-config python3 python3-pip python3-venv curl
# Release builds everywhere: kernels are hundreds of times slower at -Onone. The target CPU is set
# in Package.swift (APUS_TARGET_CPU, default haswell).
BUILD_FLAGS  := -c release

.PHONY: serve test setup deps models build build-tests test-swift test-python test-clients fuzz bench-http clean
.PHONY: deps-docker test-docker test-deploy

serve: setup
	.build/release/apus serve --host $(HOST) --port $(PORT)

test: setup build-tests test-swift test-python test-clients fuzz test-deploy test-docker

setup: deps models build

# Installs only what is missing; `apt-get update` runs only when something is.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

models:
	$(PYTHON) Models/fetch.py

build:
	$(SWIFT) build $(BUILD_FLAGS) --product apus

build-tests:
	$(SWIFT) build $(BUILD_FLAGS) --build-tests

test-swift:
	$(SWIFT) test $(BUILD_FLAGS) --skip-build

test-python:
	$(PYTHON) -m unittest discover -s Models -p 'test_*.py'

# The real Python clients from PyPI (text-generation, huggingface_hub, openai) against a running server
# (Tests/clients/run.sh: venv in .venv-clients/, a loopback port, SIGTERM at the end).
test-clients: setup
	PYTHON=$(PYTHON) Tests/clients/run.sh

# A short, bounded libFuzzer run of the HTTP request parser (Fuzz/README.md).
fuzz:
	Fuzz/run.sh 60

# The Docker image, built and run with podman (or docker) against local stand-ins of its base
# images when Docker Hub is out of reach (Tests/docker/run.sh; cached in .cache/containers/).
# Skipped with a message only where no container engine can run.
DOCKER_APT_PACKAGES := podman runc debootstrap uidmap slirp4netns fuse-overlayfs
deps-docker:
	@command -v apt-get >/dev/null || exit 0; \
	missing=""; for p in $(DOCKER_APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  if [ -n "$$SUDO" ] && ! sudo -n true 2>/dev/null; then echo "not installing$$missing: needs root"; exit 0; fi; \
	  echo "installing:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test-docker: deps-docker
	PYTHON=$(PYTHON) Tests/docker/run.sh

# deploy/: Kubernetes manifests against the Kubernetes JSON schemas, compose file against the
# Compose schema (Tests/deploy/run.sh; validators from PyPI in .venv-deploy/).
test-deploy:
	PYTHON=$(PYTHON) Tests/deploy/run.sh

bench-http: build
	Benchmarks/http/wrk_vs_nginx.sh

clean:
	rm -rf .build .build-*
