"""erxes as production has it, for a benchmark: the emulation of its procedures (``python -m runtime.emulator``)
in a process of its own, on a SecantusDB of its own (started like ``scripts/services.sh`` starts ours: same
flags, ``--sync-on-commit``), over the same broker. The runtime then runs with ``STANDALONE=false``.

    with SeparateErxes(run) as erxes:       # run: bench.common.Run
        runtime = RuntimeProcess(run, "x", erxes.runtime_env())
        ... erxes.db.standalone_conversations ...
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pymongo

from bench.common import LOG_DIR, REPO, STATE_ROOT, Run, free_port, log, proc_cpu_seconds
from tests.e2e import EmulatorProcess, stop_process

SECANTUSD = REPO / ".venv" / "bin" / "secantusd-py"


class SeparateErxes:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.port = free_port()
        self.data = STATE_ROOT / f"bench-erxes-{run.id}"
        self.mongo_url = f"mongodb://127.0.0.1:{self.port}/erxes_{run.id}?retryWrites=false"
        self.mongo: subprocess.Popen[bytes] | None = None
        self.emulator: EmulatorProcess | None = None
        self.client: pymongo.MongoClient[Any] | None = None

    def __enter__(self) -> SeparateErxes:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        with open(LOG_DIR / f"erxes-secantusd-{self.run.id}.log", "ab") as out:
            self.mongo = subprocess.Popen(
                [str(SECANTUSD), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(self.data),
                 "--sync-on-commit", "--log-level", "WARNING"], stdout=out, stderr=subprocess.STDOUT)
        self.client = pymongo.MongoClient(self.mongo_url, tz_aware=True, serverSelectionTimeoutMS=30000)
        self.client.admin.command("ping")
        self.db = self.client.get_default_database()
        self.emulator = EmulatorProcess(self.run.services, mongo_url=self.mongo_url, prefix=self.run.prefix,
                                        log_path=LOG_DIR / f"erxes-emulator-{self.run.id}.log")
        self.emulator.start()
        return self

    @staticmethod
    def runtime_env() -> dict[str, str]:
        """What the runtime's environment needs to call this erxes instead of serving its own emulation."""
        return {"STANDALONE": "false"}

    def meters(self) -> dict[str, Any]:
        assert self.mongo is not None and self.emulator is not None
        mongo, emulator = self.mongo.pid, self.emulator.pid
        return {"erxes_secantusdb": lambda: proc_cpu_seconds(mongo),
                "erxes_emulator": lambda: proc_cpu_seconds(emulator)}

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.emulator is not None and self.emulator.proc is not None:
            self.emulator.terminate()
        if self.mongo is not None:  # SecantusDB takes ~2 s to stop
            stop_process(self.mongo, 30, warn=lambda text: log(f"erxes's SecantusDB: {text}"))
        shutil.rmtree(self.data, ignore_errors=True)
