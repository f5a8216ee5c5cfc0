# The two README commands. Each prepares what it needs first (scripts/setup.sh is idempotent).
.PHONY: demo test setup lint lock

demo: setup
	bash scripts/demo.sh

test: setup
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

lint: setup
	bash -c '. scripts/venv_env.sh && ruff check . && ruff format --check .'

# Re-resolve env/requirements.in into env/constraints.txt (after changing requirements.in).
lock:
	bash scripts/lock.sh
