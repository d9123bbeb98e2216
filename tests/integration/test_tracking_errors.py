"""Honest numbers and bounded resources: a run whose metrics are not finite is not ok and its
metrics.json stays standard JSON; mdn-predict never drops a row and refuses what it cannot honour;
memory that cannot fit is refused before any work, with the estimate (mdn_experiments.run.resources);
an unreachable MLflow server fails within seconds, with a message that blames the right thing."""

from __future__ import annotations

import socket
import threading

from helpers import TINY, one_error, run_cli

RUN = [*TINY, "figures=false"]


class SilentServer:
    """A TCP server that accepts connections and never answers: what a hung MLflow server looks like."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def __exit__(self, *exc):
        self.sock.close()


class TestTracking:
    def test_an_unreachable_mlflow_server_is_one_line(self, tmp_path):
        with SilentServer() as server:
            uri = f"http://127.0.0.1:{server.port}"
            proc = run_cli([*RUN, "logger=mlflow", f"tracking.mlflow_uri={uri}", f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2
        error = one_error(proc)
        assert f"tracking.mlflow_uri='{uri}': no MLflow server answers there within 5 s" in error
        assert "file:" not in error

    def test_a_long_experiment_name_is_blamed_on_the_name(self, tmp_path):
        proc = run_cli([*RUN, "logger=mlflow", "tracking.experiment=" + "e" * 600, f"hydra.run.dir={tmp_path / 'run'}"])
        assert proc.returncode == 2
        error = one_error(proc)
        assert "tracking.experiment=" in error and "a name of 1 to 500 characters" in error
        assert "mlflow_uri" not in error

    def test_a_bad_uri_is_not_advised_a_file_uri(self, tmp_path):
        proc = run_cli(
            [*RUN, "logger=mlflow", "tracking.mlflow_uri=nosuchscheme://x", f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=tmp_path,
        )
        error = one_error(proc)
        assert proc.returncode == 2 and "cannot be used by MLflow" in error and "file:" not in error
