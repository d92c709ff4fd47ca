# The README's two commands are `make demo` and `make test`; the rest are for developers.
.PHONY: bootstrap bootstrap-dev demo test fuzz bench

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
