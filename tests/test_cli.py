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


def test_build_unknown_lesson_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyError, match="no lesson '99'"):
        main(["build", "99"])


def test_pretrain_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "nope", "--quiet"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_no_command_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
