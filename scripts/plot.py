"""Plot TensorBoard scalars over runs: one line per configuration (mean over seeds, with a band).

    python scripts/plot.py multirun/2024-05-01/12-00-00                 # the episodic return, or losses/quality
    python scripts/plot.py runs/ --tag charts/episodic_length --smoothing 10 --band ci

Runs: every directory holding an event file, found recursively under the given paths. Without
--tag it plots `charts/episodic_return` where the runs have it, else (generative models) each
`losses/*` and `quality/*` scalar in a panel of its own.

Runs that differ only in `seed` (or `resume`) form one configuration; smoothing defaults to
TensorBoard's EMA with weight 0.6; the legend sits outside the plot and names at most the best 12
configurations. The rules in full: core/runtime/curves.py.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/plot.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.runtime.curves import plot_runs  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run or multirun directories (searched recursively)")
    parser.add_argument("--tag", action="append", default=None,
                        help="scalar tag to plot (repeat for several panels); default: the episodic return, "
                             "else the losses/ and quality/ scalars")
    parser.add_argument("--smoothing", type=float, default=0.6,
                        help="EMA weight in (0, 1) or an integer moving-average window; 0 = none (default 0.6)")
    parser.add_argument("--band", choices=("std", "ci"), default="std",
                        help="the band around each line: ± std over seeds, or the 95%% CI of the mean")
    parser.add_argument("--out", default=None,
                        help="PNG to write (default: <first path>/<tag>.png, or curves.png for several tags)")
    args = parser.parse_args(argv)
    name = args.tag[0].replace("/", "_") if args.tag and len(args.tag) == 1 else "curves"
    out = args.out or str(Path(args.paths[0]) / f"{name}.png")
    try:
        panels = plot_runs(args.paths, args.tag, out, args.smoothing, args.band)
    except (FileNotFoundError, ValueError) as e:  # no runs, no such tag, a corrupt event file: one line
        sys.exit(f"error: {str(e).splitlines()[0]}")
    for tag, curves in panels.items():
        print(tag)
        for curve in curves.values():
            print(f"  {curve.label}: {len(curve.runs)} run(s), last step {curve.steps[-1]:g}: "
                  f"{curve.mean[-1]:.4g} ± {curve.std[-1]:.4g}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
