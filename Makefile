# Named tasks; `make demo` and `make test` are the two set-up commands of the README.
VENV := .venv/bin

.PHONY: demo up test test-tls test-unit bootstrap gen-protos build-ext lint bench-control bench-round bench-sched compose-check deploy-check lint-imports lint-errors routing-eval eval eval-smoke eval-mixed eval-published eval-stageroute eval-moma eval-mixed-smoke

demo: bootstrap        ## start Redis, Triton (emulated pool) and the services; answer a few requests
	$(VENV)/aragog-stack demo

up: bootstrap          ## start the stack and keep it running (Ctrl-C stops it)
	$(VENV)/aragog-stack up

test: bootstrap        ## every test: unit, then integration (real Redis, Triton, gRPC)
	$(VENV)/python -m pytest -q

test-tls: bootstrap    ## the integration tests again, every stack speaking TLS and mutual TLS
	$(VENV)/python -m pytest -q -m "integration and not same_both_ways" --tls

test-unit: bootstrap
	$(VENV)/python -m pytest -q -m "not integration"

bootstrap:
	@scripts/bootstrap.sh

gen-protos: bootstrap  ## regenerate aragog/v1 into services/v1 (git-ignored) for editable work
	$(VENV)/python protos/generate.py services

build-ext: bootstrap   ## rebuild the Cython round in place
	$(VENV)/python setup.py build_ext --inplace

lint: bootstrap
	$(VENV)/pip install -q ruff mypy cython-lint
	$(VENV)/ruff check services tests benchmarks loadgen scheduler_ext
	$(VENV)/cython-lint scheduler_ext

lint-errors: bootstrap  ## what ruff finds that is a bug, not style (pyflakes, bugbear): CI runs it
	$(VENV)/pip install -q "ruff>=0.5"
	$(VENV)/ruff check --select F,B services tests benchmarks loadgen scheduler_ext

lint-imports: bootstrap  ## the layers contract: serving imports neither emulation nor training
	$(VENV)/pip install -q import-linter
	$(VENV)/lint-imports

bench-control: bootstrap  ## control-path latency per stage on an idle pool
	$(VENV)/python benchmarks/control_path.py

bench-sched: bootstrap    ## stages one scheduler places per second through gRPC (StageSession)
	$(VENV)/python benchmarks/scheduler_throughput.py

bench-round: bootstrap    ## the scheduling round: extension against the pure-Python reference
	$(VENV)/python benchmarks/bench_round.py

compose-check: bootstrap  ## validate docker-compose.yml offline (no Docker engine needed)
	$(VENV)/pip install -q check-jsonschema
	$(VENV)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

deploy-check: bootstrap   ## render + validate the k8s package, compose, Dockerfile (offline; scripts/deploy-check.sh)
	@scripts/deploy-check.sh

routing-eval: bootstrap   ## profile, train and evaluate the routers offline (held-out split)
	$(VENV)/aragog-routing evaluate --out reports/routing.json

eval: bootstrap           ## the policy comparison on the emulated pools (~25 min); report in reports/eval
	$(VENV)/aragog-eval --out reports/eval

eval-smoke: bootstrap     ## a one-to-two-minute evaluation run; report in reports/eval-smoke
	$(VENV)/aragog-eval --smoke --out reports/eval-smoke

eval-mixed: bootstrap     ## every workflow on one stack, Azure-trace arrivals, 3 seeds (~30 min); reports/mixed
	$(VENV)/aragog-eval --mixed --out reports/mixed

eval-published: bootstrap  ## routellm, agentrouter, flowcompile beside aragog, one pool (~15 min); reports/published
	$(VENV)/aragog-eval --published --out reports/published

eval-stageroute: bootstrap  ## StageRoute while a better model arrives: regret curve (~5 min); reports/stageroute
	$(VENV)/aragog-eval --stageroute --out reports/stageroute

eval-moma: bootstrap  ## requests naming no workflow, routed by intent: accuracy and cost (~4 min); reports/moma
	$(VENV)/aragog-eval --moma --out reports/moma

eval-mixed-smoke: bootstrap  ## the mixed evaluation in a minute or two; report in reports/mixed-smoke
	$(VENV)/aragog-eval --mixed --smoke --out reports/mixed-smoke
