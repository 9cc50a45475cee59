"""The labkit command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.cli import main


def test_doctor_reports_versions_device_data_and_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for key in (
        "torch",
        "nbgrader",
        "device",
        "cache dir",
        "profile",
        "data: digits",
        "data: mnist",
        "model: digits-cnn",
    ):
        assert key in out, f"doctor output lacks {key!r}"
    assert "bundled with scikit-learn" in out


def test_doctor_flags_a_broken_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "course.yml"
    bad.write_text("title: [oops")
    monkeypatch.setenv("LABKIT_COURSE", str(bad))
    assert main(["doctor"]) == 1
    captured = capsys.readouterr()
    assert "INVALID" in captured.out and "not valid YAML" in captured.out


def _one_error_line(err: str) -> str:
    """The CLI's whole complaint: a single ``labkit: error: ...`` line, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labkit: error: "), f"expected one error line, got {err!r}"
    return lines[0]


@pytest.fixture
def in_the_course(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the course folder, with no LABKIT_COURSE pointing elsewhere."""
    monkeypatch.delenv("LABKIT_COURSE", raising=False)
    monkeypatch.chdir(root)
    return root


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "99"], "no lesson '99' in course.yml; known lessons: 00-welcome"),
        (["grade", ".", "--lesson", "42", "--no-gradebook"], "no lesson '42' in course.yml; known lessons"),
        (["pretrain", "nope", "--quiet"], "unknown model 'nope'; choose from digits-cnn"),
        (["serve", "--model", "nope"], "unknown model 'nope'; choose from digits-cnn"),
    ],
)
def test_user_mistakes_get_one_line_and_status_2(
    argv: list[str], message: str, in_the_course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown lesson or model is the user's mistake: one clear line, exit status 2, no traceback."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in _one_error_line(captured.err)
    assert "Traceback" not in captured.out + captured.err


def test_a_broken_course_file_is_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CourseError from --course names the file and the key, on one line."""
    bad = tmp_path / "course.yml"
    bad.write_text("title: x\ncourse_id: y\nversion: '1'\nlessons: []\nprofiles: {}\ncertification: {}\n")
    assert main(["build", "--course", str(bad)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{bad}: lessons: expected a non-empty list of lessons" in line


@pytest.mark.parametrize(
    "argv", [["build"], ["build", "--missing"], ["grade", "."]], ids=["build", "build --missing", "grade"]
)
def test_writing_commands_refuse_a_course_outside_the_working_directory(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """From a folder with no course.yml above it, labkit must not fall back to the checkout it was
    installed from (it used to rebuild that checkout's learner copies)."""
    monkeypatch.delenv("LABKIT_COURSE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"no course.yml in {tmp_path} or its parents" in line
    assert "--course PATH" in line
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


def test_writing_commands_act_on_a_course_named_explicitly(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--course (or LABKIT_COURSE) names the course; the command prints the absolute paths it writes to."""
    monkeypatch.delenv("LABKIT_COURSE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--missing", "--course", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"course: {(root / 'course.yml').resolve()}" in out
    assert f"writing learner copies to {(root / 'lessons').resolve()}" in out
    monkeypatch.setenv("LABKIT_COURSE", str(root / "course.yml"))
    assert main(["build", "--missing"]) == 0
    assert f"course: {(root / 'course.yml').resolve()}" in capsys.readouterr().out


def test_pretrain_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "nope", "--quiet"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_no_command_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`labkit` alone shows every command, not just a usage line."""
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: labkit")
    for command in ("doctor", "build", "pretrain", "grade", "certify", "verify", "serve", "--version"):
        assert command in out, f"the help lacks {command}"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import labkit

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"labkit {labkit.__version__}"
