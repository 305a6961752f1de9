"""Robustness of the command line (issue 21): interrupts, hostile files, non-finite numbers, huge counts."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch):
    def interrupted(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("megacluster.report.plan_view.run_plan", interrupted)
    code, out, err = run_cli(capsys, "plan", "--model", "gpt3-175b", "--gpu", "h100-sxm", "--gpus", "1024")
    assert code == 130
    assert "interrupted" in _one_error_line(err)


# ------------------------------------------------------------------------------------------ hostile user files
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
DEEP = "[" * 5000 + "]" * 5000
# each command with the flag that names a user file ({} is the file)
FILE_COMMANDS = {
    "model": ["estimate", "--model", "{}", "--gpu", "h100-sxm", "--gpus", "8"],
    "plan": ["estimate", "--plan", "{}"],
    "runs": ["validate", "--runs", "{}"],
    "site": ["campaign", "--scenario", "xai-colossus-100k", "--site", "{}", "--no-failures"],
    "profile": ["reliability", "--gpus", "1024", "--days", "10", "--profile", "{}", "--trials", "10"],
}
BAD_FILES = {   # name -> (suffix, content as bytes, fragment of the message)
    "binary": (".yaml", bytes(range(256)) * 4, "UTF-8"),
    "latin-1": (".yaml", "model: caf\xe9\n".encode("latin-1"), "UTF-8"),
    "alias bomb": (".yaml", BOMB.encode(), "alias"),
    "deep yaml": (".yaml", DEEP.encode(), "nest"),
    "yaml 100 deep": (".yaml", b"a: " + b"[" * 100 + b"]" * 100, "nested more than 64"),
    "deep json": (".json", DEEP.encode(), "nest"),
    "json 100 deep": (".json", b"[" * 100 + b"]" * 100, "nested more than 64"),
    "json nan": (".json", b'{"a": NaN}', "NaN"),
    "yaml nan": (".yaml", b"a: {b: .nan}\n", "a.b is nan"),
    "huge": (".yaml", b"# " + b"x" * (5 * 2 ** 20) + b"\n", "at most 4.0 MiB"),
    "40000-digit int": (".json", b'{"a": ' + b"9" * 40000 + b"}", "cannot read a value"),
}


@pytest.mark.parametrize("kind", sorted(FILE_COMMANDS))
@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_hostile_files_are_one_line(tmp_path, capsys, kind, bad):
    suffix, content, fragment = BAD_FILES[bad]
    f = tmp_path / f"input{suffix}"
    f.write_bytes(content)
    argv = [a.replace("{}", str(f)) for a in FILE_COMMANDS[kind]]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, err[-500:])
    line = _one_error_line(err)
    assert fragment in line and len(line) < 400, line


@pytest.mark.parametrize("kind", sorted(FILE_COMMANDS))
@pytest.mark.parametrize("target, fragment", [("dir", "is a directory"), ("/dev/null", "not a regular file")])
def test_directories_and_devices_are_refused(tmp_path, capsys, kind, target, fragment):
    path = str(tmp_path) + "/" if target == "dir" else target
    if kind == "model" and target == "dir":      # a model folder is a checkpoint: its config.json is read
        (tmp_path / "config.json").mkdir()
        fragment = "is a directory"
    argv = [a.replace("{}", path) for a in FILE_COMMANDS[kind]]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and fragment in _one_error_line(err), err


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    f = tmp_path / "plan.yaml"
    f.write_text("model: x\n")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)
    code, out, err = run_cli(capsys, "estimate", "--plan", str(f))
    assert code == 2 and "permission denied" in _one_error_line(err)


def test_error_messages_quote_a_short_excerpt(tmp_path, capsys):
    f = tmp_path / "plan.yaml"
    f.write_text("model: " + "x" * 100_000 + "\ngpu: h100-sxm\ngpus: 8\nlayout: {}\n")
    code, out, err = run_cli(capsys, "estimate", "--plan", str(f))
    assert code == 2 and len(_one_error_line(err)) < 400


def test_validate_runs_names_the_nearest_set(capsys):
    code, out, err = run_cli(capsys, "validate", "--runs", "mroe")
    assert code == 2 and "did you mean the set 'more'" in _one_error_line(err)
    code, out, err = run_cli(capsys, "validate", "--runs", "MORE", "--json")
    assert code == 0 and json.loads(out)["runs"]
