# mlops: every target installs what it needs first, so on a fresh clone
# `make train` and `make test` each work as the only command typed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
UI_PORT ?= 5000
MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
MODEL ?= digits-cnn
VERSION ?= @champion
REASON ?=
INPUT ?=
SINCE ?=
OUTPUT ?=
SERVE_PORT ?= 3000
MONITOR_PORT ?= 9090
BENTOML_STORE ?= $(CURDIR)/.bentoml
BENTO_BUILD_DIR ?= .bentoml-build
BENCH ?= all
SEARCH ?= digits_optuna
STUDY ?=
N_TRIALS ?= 20
# pytest-xdist processes for make test (auto: one per core; 0 runs in this process, for pdb);
# worksteal: an idle process takes queued tests from the other (a few DDP and server tests
# take 20-45 s each, and a fixed split can leave them all on one)
TEST_WORKERS ?= auto
# what `make data` writes; targets that read it prepare it only when it is missing or
# older than data.dvc or the install (the check costs 2 s, most of a short `make evaluate`)
DATA_FILE := data/digits/digits.npz

# a server would fail on a taken port with a traceback (bentoml) or wait forever (mlflow ui):
# name the port and the fix instead; $(1) port, $(2) target, $(3) the variable that sets it
refuse_taken_port = if (exec 3<>/dev/tcp/127.0.0.1/$(1)) 2>/dev/null; then \
	echo "port $(1) on 127.0.0.1 is taken (an earlier make $(2)?): stop it, or make $(2) $(3)=$$(($(1) + 1))"; \
	exit 1; fi

.DEFAULT_GOAL := help
.PHONY: help install data train test lint ui bench clean evaluate compress reproduce retrain promote rollback history show predict deploy serve monitor monitor-report k8s containerize server server-stop sweep-worker

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install mlops (editable) with test tools

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python tools/install_venv.py $(VENV) ".[test]" \
		|| { grep -v "is ignored: it is neither" $(VENV)/install.log | tail -40; exit 1; }
	@touch $@

data: install ## write the built-in datasets to data/ and check them against data.dvc
	@$(BIN)/mlops data prepare

$(DATA_FILE): $(wildcard data.dvc) $(STAMP)
	@$(BIN)/mlops data prepare

train: $(DATA_FILE) ## train, track and register (override config: ARGS="model=rnn trainer.max_epochs=5")
	$(BIN)/mlops train $(ARGS)

evaluate: $(DATA_FILE) ## score MODEL at VERSION (number or @alias) on the test split of its training data
	@$(BIN)/mlops evaluate $(MODEL) --version $(VERSION) $(ARGS)

compress: $(DATA_FILE) ## ONNX and int8 variants of MODEL at VERSION, gated; passing ones registered
	@$(BIN)/mlops compress $(MODEL) --version $(VERSION) $(ARGS)

reproduce: install ## rebuild MODEL at VERSION from its lineage (commit, overrides, data bytes) and compare; exit 3 if it differs
	@$(BIN)/mlops reproduce $(MODEL) --version $(VERSION) $(ARGS)

retrain: install ## the next version of MODEL from VERSION's recipe on new data (ARGS="--with-feedback", "data.path=...", "--if-drift")
	@$(BIN)/mlops retrain $(MODEL) --version $(VERSION) $(ARGS)

promote: install ## make MODEL version VERSION champion by hand (REASON="...")
	@$(BIN)/mlops registry promote $(MODEL) $(VERSION) $(if $(REASON),--reason "$(REASON)") $(ARGS)

rollback: install ## move MODEL's champion back to the previous champion
	@$(BIN)/mlops registry rollback $(MODEL) $(if $(REASON),--reason "$(REASON)") $(ARGS)

history: install ## MODEL's alias history
	@$(BIN)/mlops registry history $(MODEL) $(ARGS)

show: install ## lineage of MODEL at VERSION
	@$(BIN)/mlops registry show $(MODEL)$(if $(filter @%,$(VERSION)),$(VERSION),/$(VERSION)) $(ARGS)

predict: install ## MODEL at VERSION's predictions for INPUT (.csv/.npz), written to OUTPUT
	@test -n "$(INPUT)" || { echo "name the file to score: make predict INPUT=new.csv (MODEL=..., VERSION=..., OUTPUT=...)"; exit 1; }
	@$(BIN)/mlops predict $(MODEL) "$(INPUT)" --version $(VERSION) $(if $(OUTPUT),--output "$(OUTPUT)") $(ARGS)

deploy: install ## build a Bento of MODEL at VERSION (default @champion)
	@$(BIN)/mlops deploy $(MODEL) --version $(VERSION) $(ARGS)

serve: install ## serve the last Bento built by make deploy on 127.0.0.1:3000 (SERVE_PORT=..., ARGS="deploy.tls.certfile=... deploy.tls.keyfile=...")
	@$(call refuse_taken_port,$(SERVE_PORT),serve,SERVE_PORT)
	@$(BIN)/mlops serve --port $(SERVE_PORT) paths.bentoml_home=$(BENTOML_STORE) paths.bento_build_dir=$(BENTO_BUILD_DIR) $(ARGS)

monitor: install ## Prometheus on 127.0.0.1:9090 scraping make serve's service with the project's rules (MONITOR_PORT=...)
	@command -v prometheus >/dev/null || { echo "installing prometheus (Debian package)"; \
		apt-get install -y -qq prometheus >/dev/null 2>&1 || sudo apt-get install -y -qq prometheus >/dev/null; }
	@$(call refuse_taken_port,$(MONITOR_PORT),monitor,MONITOR_PORT)
	@$(BIN)/mlops monitor prometheus --port $(MONITOR_PORT) --target 127.0.0.1:$(SERVE_PORT) $(ARGS)

monitor-report: install ## drift report of MODEL at VERSION's payload log since SINCE (default 1d), in MLflow; exit 3 on drift
	@$(BIN)/mlops monitor report $(MODEL) --version $(VERSION) $(if $(SINCE),--since "$(SINCE)") $(ARGS)

k8s: install ## Kubernetes manifests of the last Bento in k8s/, validated offline (ARGS="deploy.kubernetes.registry=...")
	@$(BIN)/mlops k8s paths.bentoml_home=$(BENTOML_STORE) paths.bento_build_dir=$(BENTO_BUILD_DIR) $(ARGS)

containerize: install ## docker image of the last Bento (needs a Docker engine)
	@test -f $(BENTO_BUILD_DIR)/LAST_BENTO || { echo "no Bento yet: run make deploy first"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "containerize needs a running Docker engine, and none answers here."; \
		echo "The Bento can still be exported: BENTOML_HOME=$(BENTOML_STORE) $(BIN)/bentoml export $$(cat $(BENTO_BUILD_DIR)/LAST_BENTO) bento.bento"; exit 1; }
	BENTOML_HOME=$(BENTOML_STORE) $(BIN)/bentoml containerize $$(cat $(BENTO_BUILD_DIR)/LAST_BENTO)

test: $(DATA_FILE) ## run the test suite, one pytest process per core (TEST_WORKERS=0: one process, for pdb)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(if $(CI),-q -p no:cacheprovider,) $(ARGS)

lint: install ## ruff
	$(BIN)/ruff check src pipelines tests bench
	$(BIN)/ruff format --check src pipelines tests bench

server: install ## the team stack: PostgreSQL, S3 (SeaweedFS) and mlflow server on 127.0.0.1:5001, in .team/ (ARGS="team.host=0.0.0.0 ...")
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "installing postgresql (Debian package)"; \
		apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } \
		|| sudo apt-get install -y -qq postgresql >/dev/null; }
	@$(BIN)/mlops server start $(ARGS)

sweep-worker: install ## join the shared search STUDY (SEARCH=digits_optuna, N_TRIALS=20): start as many as you like, on any machine
	@test -n "$(STUDY)" || { echo "name the study every worker joins: make sweep-worker STUDY=digits-lr"; exit 1; }
	@$(MAKE) --no-print-directory -s $(DATA_FILE)
	@storage="$${MLOPS_STUDY_STORAGE:-$$($(BIN)/mlops server url studies)}" && \
	tracking="$${MLFLOW_TRACKING_URI:-$$($(BIN)/mlops server url tracking)}" && \
	MLOPS_STUDY_STORAGE="$$storage" MLFLOW_TRACKING_URI="$$tracking" $(BIN)/mlops train \
		hparams_search=$(SEARCH) hydra.sweeper.study_name=$(STUDY) hydra.sweeper.n_trials=$(N_TRIALS) $(ARGS)

server-stop: install ## stop the team stack (its data stays in .team/)
	@$(BIN)/mlops server stop $(ARGS)

ui: install ## MLflow web UI on http://127.0.0.1:5000 (UI_PORT=...)
	@$(call refuse_taken_port,$(UI_PORT),ui,UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port $(UI_PORT)

clean: ## remove training outputs (keeps .venv, the MLflow store and data)
	rm -rf logs outputs .pytest_cache .ruff_cache

bench: $(DATA_FILE) ## run the benchmarks, write docs/benchmarks.md (BENCH=serving for one; about 30 min)
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package) for the serving benchmark"; \
		apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk >/dev/null; }
	@$(BIN)/python -c "import litserve" 2>/dev/null || { echo "installing the bench extra (LitServe)"; \
		$(BIN)/python tools/install_venv.py $(VENV) ".[test,bench]"; }
	$(BIN)/python -m bench $(BENCH)
