import pytest

from .test_kill_resume import run_to_end


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """One uninterrupted lineage (test_kill_resume's OVERRIDES): what the kill/resume chain
    must reproduce, and the finished lineage that test_damaged_inputs.py damages copies of."""
    run_dir = tmp_path_factory.mktemp("reference") / "rd"
    return {"dir": run_dir, "proc": run_to_end(run_dir)}
