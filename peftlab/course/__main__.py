"""The course's commands.

    python -m peftlab.course assignments --out assignments   the graded (nbgrader) edition, from notebooks/
    python -m peftlab.course progress                        your progress, notebook by notebook
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def assignments(args) -> int:
    from peftlab.course.assignments import build, points_table
    from peftlab.course.checker_source import PairingError
    try:
        built = build(Path(args.notebooks), Path(args.out))
    except PairingError as error:
        print(f"assignments: {error}", file=sys.stderr)
        return 1
    print(points_table(built))
    print(f"\nnbgrader course root written to {args.out}: nbgrader_config.py and source/ "
          f"({len(built)} assignments). Next: cd {args.out} && nbgrader generate_assignment <name>")
    return 0


def progress(args) -> int:
    from peftlab.course import progress as store
    from peftlab.course.progress_view import current, table
    path = Path(args.file).expanduser() if args.file else store.location()
    print(f"Progress kept in {path}{'' if path.exists() else ' (nothing recorded yet)'}\n")
    print(table(current(path), detail=not args.brief))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftlab.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("assignments", help="write an nbgrader course root from the notebooks")
    build.add_argument("--out", required=True, help="the course root to write (e.g. assignments)")
    build.add_argument("--notebooks", default="notebooks", help="the notebooks folder (default: notebooks)")
    build.set_defaults(run=assignments)
    view = commands.add_parser("progress", help="print your progress, notebook by notebook")
    view.add_argument("--file", help="the progress file (default: $PEFTLAB_PROGRESS or ~/.peftlab/progress.json)")
    view.add_argument("--brief", action="store_true", help="counts only, without each exercise")
    view.set_defaults(run=progress)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
