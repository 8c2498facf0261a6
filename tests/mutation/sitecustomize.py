"""Coverage in subprocesses started by tests during `mutate.py map` (on PYTHONPATH only then): starts
coverage (COVERAGE_PROCESS_START) and names the context after the test that started the process."""
import os

if os.environ.get("COVERAGE_PROCESS_START"):
    import coverage

    cov = coverage.process_startup()
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    if cov is not None and test:
        cov.switch_context(test)
