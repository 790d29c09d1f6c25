"""Config errors reach the user as one clear line naming the key, never a traceback."""

import contextlib
import io

import pytest

from recursive import cli


@pytest.mark.parametrize("override,named", [
    ("model=nope", "model/nope"),                       # unknown group option
    ("proposer=gpt9", "proposer/gpt9"),
    ("lineage.generations=abc", "lineage.generations"),  # wrong type
    ("budget.param_ratio=[1,2]", "budget.param_ratio"),
    ("lineage.generations=", "lineage.generations"),     # missing value
    ("lineage.generatoins=2", "lineage.generatoins"),    # unknown key
])
def test_config_error_names_the_key(override, named, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["run", "experiment=smoke", override, f"run_dir={tmp_path / 'rd'}"])
    text = out.getvalue() + err.getvalue()
    assert rc == cli.EXIT_USAGE, text
    assert text.startswith("recursive: error:") and named in text, text
    assert "Traceback" not in text
    assert not (tmp_path / "rd").exists()  # nothing written for a config that never ran
