"""Every bad input of :mod:`tests.reliability.bad_inputs` ends ``rlhf-jax`` with a message that
names the file, row, key or tensor and what was expected: no traceback, and no input file
changed. One case runs as a real process, to see that stderr holds that message and nothing
that looks like a failure (TPU initialisation, transformers' "PyTorch was not found")."""

import os
import re

import pytest

from rlhf_jax import cli
from tests.reliability import bad_inputs as bi


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return bi.make_inputs(str(tmp_path_factory.mktemp("bad_inputs")))


@pytest.mark.parametrize("case", bi.CASES, ids=[c.name for c in bi.CASES])
def test_bad_input_ends_with_a_named_error(inputs, case, capsys):
    before = bi.snapshot(inputs)
    with pytest.raises(SystemExit) as stopped:
        cli.main(case.argv(inputs))
    message = stopped.value.code
    assert isinstance(message, str), f"exit status {message!r} instead of a message"
    assert message.startswith("rlhf-jax "), message
    assert re.search(case.expect, message), message
    assert "Traceback" not in capsys.readouterr().err
    assert bi.changed_files(before, bi.snapshot(inputs)) == []


def test_catalogue_has_the_issue_classes():
    assert len(bi.CASES) >= 30
    assert len({c.name for c in bi.CASES}) == len(bi.CASES)


def test_the_command_prints_the_message_and_no_start_up_noise(inputs):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS",
                                                             "TRANSFORMERS_NO_ADVISORY_WARNINGS")}
    env["PYTHONPATH"] = bi.REPO
    case = next(c for c in bi.CASES if c.name == "unknown data.source")
    done = bi.run_cli(case.argv(inputs), env)
    assert done.returncode == 1
    assert done.stdout == ""  # stdout carries results only
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(case.expect, lines[0]), done.stderr
