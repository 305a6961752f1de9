"""Time to write the `make demo` campaign (scenario xai-colossus-100k) as an HTML report (target < 5 s on 2
cores): the whole command as a user runs it, and its parts in process (the campaign itself, building the
figures, writing the self-contained file). Prints figures; asserts nothing.

    python benchmarks/html_speed.py [--scenario xai-colossus-100k] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="xai-colossus-100k")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    out = Path(tempfile.mkdtemp()) / "campaign.html"
    cmd = [sys.executable, "-m", "megacluster.cli", "campaign", "--scenario", a.scenario, "--html", str(out)]
    walls, cpus = [], []
    for _ in range(a.repeat):
        t0, c0 = time.perf_counter(), _child_cpu()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
        cpus.append(_child_cpu() - c0)

    from megacluster.campaign.scenarios import run_scenario, title
    from megacluster.report.html import builder
    from megacluster.report.html.page import write_html

    builder("campaign")                                   # plotly's import, as the command pays it
    t0 = time.process_time()
    r = run_scenario(a.scenario)
    t1 = time.process_time()
    head, sub, panels, notes = builder("campaign")(r, title(a.scenario))
    t2 = time.process_time()
    write_html(out, head, sub, panels, notes)
    t3 = time.process_time()
    print(f"megacluster campaign --scenario {a.scenario} --html: {os.cpu_count()} CPUs")
    print(f"  whole command (new process, imports included): wall best {min(walls):.2f} s, all "
          f"{', '.join(f'{w:.2f}' for w in walls)}; CPU best {min(cpus):.2f} s (target < 5; load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"  in process, CPU seconds: campaign {t1 - t0:.2f} s, {len(panels)} figures built {t2 - t1:.2f} s, HTML written "
          f"{t3 - t2:.2f} s ({out.stat().st_size / 1e6:.1f} MB, {len(r.failure_timeline_hours['cause']) if r.failure_timeline_hours else 0:,} "
          f"interruptions in the timeline)")


def _child_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


if __name__ == "__main__":
    main()
