"""The end of a sweep (Hydra multirun): a failed job is reported and the others go on; at the end
the sweep lists its failed jobs and the command exits non-zero.

Registered in conf/config.yaml as a Hydra callback. Each job records its own status in its
metrics.json (a failed one with the one-line reason), so the report works for every launcher,
also those that run jobs in other processes or on other machines.
"""
import json
from pathlib import Path

from hydra.experimental.callback import Callback

FAILED = []  # (job directory, reason) of the last sweep in this process: the command's exit status


def job_statuses(sweep_dir):
    """[(job directory, metrics.json contents or None)] of a sweep directory, in job order."""
    jobs = []
    for directory in sorted(Path(sweep_dir).iterdir(), key=lambda p: (not p.name.isdigit(), len(p.name), p.name)):
        if directory.is_dir() and not directory.name.startswith("."):  # not a launcher's own (.submitit)
            path = directory / "metrics.json"
            try:
                jobs.append((directory, json.loads(path.read_text()) if path.is_file() else None))
            except (OSError, ValueError):
                jobs.append((directory, {"status": "failed", "error": f"unreadable {path}"}))
    return jobs


class SweepReport(Callback):
    def on_multirun_start(self, config, **kwargs):
        FAILED.clear()

    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        jobs = job_statuses(sweep_dir)
        ended = ("completed", "interrupted")
        FAILED[:] = [(directory, (metrics or {}).get("error", "no metrics.json: the job did not finish"))
                     for directory, metrics in jobs if (metrics or {}).get("status") not in ended]
        print(f"sweep: {len(jobs) - len(FAILED)} of {len(jobs)} jobs completed in {sweep_dir}")
        for directory, reason in FAILED:
            print(f"  failed: {directory}: {reason}")
