"""The campaign command's bad-input paths: one line on stderr, exit code 2."""

import pytest

from megacluster.campaign.cli import parse_count
from megacluster.cli import main
from megacluster.errors import UserError


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.mark.parametrize("argv,msg", [
    (["campaign"], "give --scenario"),
    (["campaign", "--scenario", "xai-colossus"], "unknown scenario"),
    (["campaign", "--scenario", "xai-colossus-100k", "--model", "gpt3-175b"], "drop --model"),
    (["campaign", "--model", "gpt3-175b", "--gpu", "h100-sxm", "--gpus", "1024"], "missing --tokens"),
    (["campaign", "--model", "gpt3-175b", "--tokens", "lots", "--gpu", "h100-sxm", "--gpus", "1024"],
     "cannot read"),
    (["campaign", "--model", "gpt3-175b", "--tokens", "300B", "--gpu", "h100-sxm"], "missing --gpus"),
    (["campaign", "--scenario", "meta-llama3-405b", "--set", "pue"], "NAME=VALUE"),
    (["campaign", "--scenario", "meta-llama3-405b", "--set", "pue=abc"], "not a number"),
    (["campaign", "--compare", "meta-llama3-405b", "nope"], "unknown scenario"),
    (["campaign", "--scenario", "meta-llama3-405b", "--site", "mars"], "unknown site"),
])
def test_bad_input_is_one_line_exit_2(argv, msg, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_parse_count():
    assert parse_count("15.6T") == pytest.approx(15.6e12)
    assert parse_count("300B") == pytest.approx(3e11)
    assert parse_count("1.5e13") == pytest.approx(1.5e13)
    with pytest.raises(UserError):
        parse_count("-3T")
