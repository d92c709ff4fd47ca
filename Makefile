# The README's two commands are `make demo` and `make test`; the rest are for developers.
.PHONY: bootstrap bootstrap-dev demo test fuzz bench bench-split e2e-large fault-campaign flood fortune-gpt model-cards dcgan-weights gan-quality

bootstrap:
	scripts/bootstrap.sh

bootstrap-dev:
	scripts/bootstrap.sh --dev

demo: bootstrap
	rollml demo

test: bootstrap-dev
	scripts/check.sh

# Long property-based campaigns on fresh random examples (CI runs bounded versions on fixed ones).
fuzz: bootstrap-dev
	ROLLML_FUZZ_SCALE=50 python3 -m pytest -m "not slow" tests -x -q

bench: bootstrap-dev
	for b in bench/*.py; do python3 $$b || exit 1; done

# Split disputes on anvil with the real agents, one JSON object per model (GPT-2 124M and DCGAN-128 take
# minutes: not in CI): `make bench-split SPLIT_MODELS="mnist-mlp gpt2"`.
SPLIT_MODELS ?= mnist-mlp gpt2-tiny dcgan128 gpt2
bench-split: bootstrap-dev
	for m in $(SPLIT_MODELS); do python3 bench/dispute.py --model $$m --json || exit 1; done

# GPT-2 124M (8 prompt tokens, 16 new) and DCGAN-128 end to end through the daemons on anvil: a dishonest
# `rollml node` caught by `rollml challenger`, the request re-served by the honest node (minutes; not in CI):
# `make e2e-large E2E_MODELS=gpt2 E2E_FAULTS=tensor`.
E2E_MODELS ?= gpt2,dcgan128
E2E_FAULTS ?= output,tensor
e2e-large: bootstrap-dev
	python3 scripts/e2e_large.py --models $(E2E_MODELS) --faults $(E2E_FAULTS)

# N random faults played by the real agents on the embedded chain (CI runs a bounded sample in pytest):
# `make fault-campaign N=200 SEED=7 MODELS=mnist-mlp`, or RPC=http://127.0.0.1:8545 for a running anvil;
# KINDS=training (or inference,training, or kind names) for the training kinds.
N ?= 50
SEED ?= 1
MODELS ?= mnist-mlp,lenet,gpt2-tiny
KINDS ?= inference
RPC ?= embedded
fault-campaign: bootstrap
	python3 scripts/fault_campaign.py --faults $(N) --seed $(SEED) --models $(MODELS) --kinds $(KINDS) --rpc $(RPC)

# Floods of 300 games against one node and one challenger on anvil, in-process and as daemons (issue 12;
# CI runs the 65-game floods), then the largest flood one agent answers: bench/flood.py.
flood: bootstrap-dev
	python3 -m pytest -m campaign tests/agents/test_flood.py -v
	python3 bench/flood.py

# Retrain fortune-gpt into mlkit/assets (~20 minutes of one core; seeded, deterministic for a torch build).
fortune-gpt: bootstrap-dev
	nice -n 10 python3 scripts/train_fortune_gpt.py

# The reference models' cards as the table of docs/models.md (VM steps measured; minutes).
model-cards: bootstrap-dev
	python3 scripts/model_cards.py

# Retrain the DCGAN generators (seeded; ~15 and ~6 minutes of one core) into mlkit/weights/, then measure
# them: the share of 256 generated images the trained LeNet recognises (trained / untrained / real digits).
dcgan-weights: bootstrap-dev
	nice -n 10 python3 scripts/train_dcgan.py dcgan32
	nice -n 10 python3 scripts/train_dcgan.py dcgan128

gan-quality: bootstrap-dev
	python3 bench/gan.py
