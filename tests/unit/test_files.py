"""mdn_experiments.files: what a tool reads from a folder is a regular file of bounded size and shape,
and what it writes never goes through a link or onto a special file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mdn_experiments import files
from mdn_experiments.errors import RunFolderError, clip, one_line


def victim(tmp_path: Path) -> Path:
    """A file outside the folder that a planted link points at: it must never change."""
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


def read_in_a_child(code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with a time limit: a read that blocks (a FIFO) fails the
    test instead of hanging it."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


class TestReading:
    def test_a_regular_file_is_read_whole(self, tmp_path):
        (tmp_path / "a.json").write_text('{"x": [1, 2]}')
        assert files.read_json(tmp_path / "a.json") == {"x": [1, 2]}

    def test_a_link_is_refused_even_to_a_regular_file(self, tmp_path):
        (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
        (tmp_path / "real.json").write_text("{}")
        with pytest.raises(files.FileRefused, match="is a symbolic link"):
            files.read_json(tmp_path / "link.json")
        assert files.read_bytes(tmp_path / "link.json", follow=True) == b"{}"  # a user's data file may be one

    def test_a_fifo_does_not_hang_a_reader(self, tmp_path):
        fifo = tmp_path / "metrics.json"
        os.mkfifo(fifo)
        proc = read_in_a_child(f"from mdn_experiments import files; files.read_json({str(fifo)!r})")
        assert "is a FIFO (named pipe): only regular files are read" in proc.stderr

    @pytest.mark.parametrize("follow", [False, True])
    def test_dev_zero_is_refused_without_reading(self, tmp_path, follow):
        (tmp_path / "model.pt").symlink_to("/dev/zero")
        with pytest.raises(files.FileRefused, match="symbolic link" if not follow else "character device"):
            files.read_bytes(tmp_path / "model.pt", files.MODEL_BYTES, follow=follow)

    def test_a_file_above_the_limit_is_refused_by_its_size(self, tmp_path):
        big = tmp_path / "state.pt"
        with big.open("wb") as fh:
            fh.truncate(files.MODEL_BYTES + 1)  # sparse: nothing is written, nothing must be read
        with pytest.raises(files.FileRefused, match="is 4 GiB, more than the 4 GiB such a file may hold"):
            files.read_bytes(big, files.MODEL_BYTES)

    def test_yaml_aliases_are_refused(self, tmp_path):
        laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20)
        )
        (tmp_path / "config.yaml").write_text(laughs)
        with pytest.raises(files.FileRefused, match="YAML alias"):
            files.read_yaml(tmp_path / "config.yaml")

    def test_deep_nesting_is_refused_before_any_walk(self, tmp_path):
        (tmp_path / "deep.yaml").write_text("k: " + "[" * 50 + "]" * 50 + "\n")
        with pytest.raises(files.FileRefused, match="nested deeper than 32 levels"):
            files.read_yaml(tmp_path / "deep.yaml")
        (tmp_path / "deeper.json").write_text("[" * 100_000 + "]" * 100_000)
        with pytest.raises(files.FileRefused, match="nested too deep|nested deeper"):
            files.read_json(tmp_path / "deeper.json")

    def test_shared_references_cannot_make_a_walk_exponential(self):
        node: list = ["leaf"]
        for _ in range(30):  # 2**30 paths through 30 lists
            node = [node, node]
        with pytest.raises(files.FileRefused, match=f"more than {files.MAX_VALUES} values"):
            files.check_shape({"config": node}, "model.pt", max_depth=100)

    def test_not_utf8_or_not_a_mapping_is_one_line(self, tmp_path):
        (tmp_path / "a.yaml").write_bytes(b"\xff\xfe")
        with pytest.raises(RunFolderError, match="is not UTF-8 text"):
            files.read_yaml(tmp_path / "a.yaml")
        (tmp_path / "b.yaml").write_text("- 1\n")
        with pytest.raises(RunFolderError, match="is empty or not a mapping"):
            files.read_yaml(tmp_path / "b.yaml")


class TestWriting:
    def test_the_file_is_replaced_whole(self, tmp_path):
        target = tmp_path / "metrics.json"
        target.write_text("old")
        with pytest.raises(ZeroDivisionError):
            with files.replaced(target, text=True) as fh:
                fh.write("half")
                1 / 0
        assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
        files.write_text(target, "new")
        assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    @pytest.mark.parametrize("name", ["history.csv", "model.pt", "summary.md", "state.pt"])
    def test_a_link_at_the_target_is_refused_and_never_followed(self, tmp_path, name):
        folder, precious = tmp_path / "run", victim(tmp_path)
        folder.mkdir()
        (folder / name).symlink_to(precious)
        with pytest.raises(files.FileRefused, match="is a symbolic link: it is not replaced"):
            files.write_bytes(folder / name, b"overwritten")
        assert precious.read_text() == "precious\n" and (folder / name).is_symlink()

    def test_a_special_file_at_the_target_is_refused(self, tmp_path):
        os.mkfifo(tmp_path / "summary.csv")
        with pytest.raises(files.FileRefused, match="is a FIFO"):
            files.write_text(tmp_path / "summary.csv", "x")

    def test_a_folder_that_is_a_link_is_not_written_into(self, tmp_path):
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "figures").symlink_to(elsewhere)
        with pytest.raises(files.FileRefused, match="figures is a symbolic link"):
            files.write_bytes(tmp_path / "run" / "figures" / "loss.png", b"png")
        assert list(elsewhere.iterdir()) == []

    def test_the_temporary_name_is_never_an_existing_file(self, tmp_path, monkeypatch):
        """The old fixed names (state.pt.tmp, .metrics.json.tmp) planted as links change nothing."""
        precious = victim(tmp_path)
        for name in ("state.pt.tmp", ".state.pt.tmp", "metrics.json.tmp", ".metrics.json.tmp"):
            (tmp_path / name).symlink_to(precious)
        files.write_bytes(tmp_path / "state.pt", b"state")
        files.write_text(tmp_path / "metrics.json", "{}")
        assert precious.read_text() == "precious\n"
        assert (tmp_path / "state.pt").read_bytes() == b"state"

    def test_a_lock_file_that_is_a_link_is_refused_and_not_truncated(self, tmp_path):
        precious = victim(tmp_path)
        (tmp_path / ".lock").symlink_to(precious)
        with pytest.raises(files.FileRefused, match="a lock file is a regular file"):
            files.open_lock_file(tmp_path / ".lock")
        assert precious.read_text() == "precious\n"


class TestFolders:
    def test_links_and_fifos_anywhere_in_a_folder_are_refused(self, tmp_path):
        sweep = tmp_path / "sweep"
        (sweep / "K=1" / ".hydra").mkdir(parents=True)
        files.check_folder(sweep)  # regular files and folders only: fine
        (sweep / "K=1" / ".hydra" / "config.yaml").symlink_to(victim(tmp_path))
        with pytest.raises(files.FileRefused, match=r"config.yaml is a symbolic link \(to .*victim.txt\)"):
            files.check_folder(sweep, "a sweep folder")
        (sweep / "K=1" / ".hydra" / "config.yaml").unlink()
        os.mkfifo(sweep / "K=1" / "history.csv")
        with pytest.raises(files.FileRefused, match="history.csv is a FIFO"):
            files.check_folder(sweep)

    def test_a_job_folder_that_is_a_link_is_refused(self, tmp_path):
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (tmp_path / "sweep").mkdir()
        (tmp_path / "sweep" / "K=2").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(files.FileRefused, match="K=2 is a symbolic link"):
            files.check_folder(tmp_path / "sweep")

    def test_a_folder_named_through_a_link_is_its_real_folder(self, tmp_path):
        (tmp_path / "real").mkdir()
        (tmp_path / "named").symlink_to(tmp_path / "real", target_is_directory=True)
        files.check_folder(tmp_path / "named")
        assert files.make_folder(tmp_path / "named", named=True) == tmp_path / "named"
        with pytest.raises(files.FileRefused):
            files.make_folder(tmp_path / "named")


class TestMessages:
    def test_a_huge_name_makes_a_bounded_line(self):
        name = "c" * 20_000_000
        line = one_line(f"column {clip(name, 80)!r} of x.csv is not numeric\nsecond line")
        assert "\n" not in line and len(line) < 200

    def test_one_line_bounds_any_message(self):
        assert len(one_line("x" * 10_000_000)) <= 1000 + 5
        assert json.dumps(clip("a\nb")) == '"a\\\\nb"'
