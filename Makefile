# The README's two commands are `make demo` and `make test`; the rest are for developers.
.PHONY: bootstrap bootstrap-dev demo test fuzz bench fault-campaign

bootstrap:
	scripts/bootstrap.sh

bootstrap-dev:
	scripts/bootstrap.sh --dev

demo: bootstrap
	rollml demo

test: bootstrap-dev
	scripts/check.sh

# Long property-based campaigns (CI runs the bounded versions inside `make test`).
fuzz: bootstrap-dev
	ROLLML_FUZZ_SCALE=50 python3 -m pytest -m "not slow" tests -x -q

bench: bootstrap-dev
	for b in bench/*.py; do python3 $$b || exit 1; done

# N random faults played by the real agents on the embedded chain (CI runs a bounded sample in pytest):
# `make fault-campaign N=200 SEED=7 MODELS=mnist-mlp`, or RPC=http://127.0.0.1:8545 for a running anvil.
N ?= 50
SEED ?= 1
MODELS ?= mnist-mlp,lenet,gpt2-tiny
RPC ?= embedded
fault-campaign: bootstrap
	python3 scripts/fault_campaign.py --faults $(N) --seed $(SEED) --models $(MODELS) --rpc $(RPC)
