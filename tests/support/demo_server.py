"""``planoscope demo`` as a test server: the real console program on free ports (its fakes' too),
through conftest's ``Server`` (conftest's ``demo_factory`` fixture starts them)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from conftest import Server


class DemoServer(Server):
    """``planoscope demo`` on free ports (the fakes' too), through conftest's ``Server``."""

    def __init__(self, data_dir: Path | None, *args: str):
        super().__init__(data_dir or Path("planoscope-data/demo"), *args)
        self.explicit_dir = data_dir is not None
        self.envoy_url = self.brightstaff_url = ""

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "planoscope",
            "demo",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--envoy-port",
            "0",
            "--brightstaff-port",
            "0",
            *(["--data-dir", str(self.data_dir)] if self.explicit_dir else []),
            *self.args,
        ]

    def _parse_addresses(self) -> None:
        super()._parse_addresses()
        out = "\n".join(self.lines("out"))
        envoy = re.search(r"^planoscope: fake Envoy admin on (http://\S+/stats/prometheus)$", out, re.M)
        brightstaff = re.search(r"^planoscope: fake brightstaff metrics on (http://\S+/metrics)$", out, re.M)
        assert envoy and brightstaff, self.output()
        self.envoy_url, self.brightstaff_url = envoy.group(1), brightstaff.group(1)
