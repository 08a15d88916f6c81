# Two commands for a newcomer: `make demo` and `make test`.
.PHONY: setup demo test lab-up lab-down clean

setup:
	scripts/bootstrap.sh

demo: setup
	scripts/demo.sh

test:
	scripts/test.sh

lab-up: setup
	.venv/bin/infra lab up

lab-down:
	.venv/bin/infra lab down
