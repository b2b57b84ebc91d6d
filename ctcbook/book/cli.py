"""The ``ctcbook`` command: run chapters, build the book, train one run."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import parameters, publish, runner  # none imports torch or papermill: bad requests are refused at once
from .profiles import PROFILES
from .runner import BookBuildError, ChapterFailedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctcbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute chapter notebooks with papermill")
    run.add_argument("chapters", nargs="*", help="chapter names, e.g. 01_tradeoff (default: all)")
    run.add_argument("--profile", default="default", help=f"one of {sorted(PROFILES)}")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a notebook parameter (VALUE is YAML: 200, 0.05, [0,1,2], null)")
    run.add_argument("--output-dir", default=None, help="where executed notebooks go (default book/chapters)")
    run.add_argument("--force", action="store_true",
                     help="re-execute chapters that are up to date (same notebook, parameters, library, runs)")

    book = sub.add_parser("book", help="build the HTML book from the executed chapters")
    book.add_argument("--warnings-as-errors", action="store_true", help="fail on any Sphinx warning")

    copy = sub.add_parser("publish", help="copy the built book (_build/html) to a folder for any static host")
    copy.add_argument("dir", help="destination folder (created; must be empty or a previous publish)")
    copy.add_argument("--html", default=None, help="built book to copy (default <repo>/_build/html)")

    train = sub.add_parser("train", help="train (or reuse, or resume) one run")
    train.add_argument("--config", required=True,
                       help="JSON file of TrainConfig fields (or of FusionTrainConfig fields, with e2e_version)")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    train.add_argument("--runs", default=None, help="run store folder (default $CTCBOOK_RUNS or ./runs)")
    train.add_argument("--no-wait", action="store_true",
                       help="if another process is training this run, refuse at once instead of waiting for it")

    check = sub.add_parser("check", help="verify every checkpoint and resume state of a run store (SHA-256)")
    check.add_argument("--runs", default=None, help="run store folder (default $CTCBOOK_RUNS or ./runs)")

    sub.add_parser("list", help="list chapters, their parameters and the profiles")

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            overrides = {name: parameters.parse_value(value) for name, value in args.parameter}
            kwargs = {"output_dir": args.output_dir} if args.output_dir else {}
            runner.run_chapters(args.chapters or None, args.profile, overrides, force=args.force, **kwargs)
        elif args.command == "book":
            print(runner.build_book(warnings_as_errors=args.warnings_as_errors))
        elif args.command == "publish":
            print(publish.publish(args.dir, **({"html": args.html} if args.html else {})))
        elif args.command == "train":
            from .. import distributed
            from ..config import config_from_dict
            from ..train import train
            from ..runs import RunStore

            # under torchrun every rank runs this; rank 0 alone writes the run folder and prints its path
            config = config_from_dict(json.loads(Path(args.config).read_text()))
            run_ = train(config, store=RunStore(args.runs), device=args.device, wait=not args.no_wait)
            rank = distributed.from_env()
            distributed.cleanup(rank)
            if rank.main:
                print(run_.path)
        elif args.command == "check":
            return check_store(args.runs)
        elif args.command == "list":
            for chapter in runner.chapters():
                print(chapter, runner.resolve_parameters(chapter, "default"))
            print("profiles:", ", ".join(sorted(PROFILES)))
    except (ValueError, FileNotFoundError) as err:
        print(f"ctcbook: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a failed chapter or run: say what failed, exit non-zero
        from ..runs import DamagedFileError, RunFailedError, RunLockedError, StoreWriteError

        if isinstance(err, (BookBuildError, ChapterFailedError, RunFailedError, DamagedFileError, RunLockedError,
                            StoreWriteError)):
            print(f"ctcbook: {err}", file=sys.stderr)
            return 1
        raise
    return 0


def check_store(root: str | None) -> int:
    """``ctcbook check``: print every damaged file of the store at ``root``; exit status 1 if any."""
    from ..runs import RunStore

    store = RunStore(root)
    if not store.root.is_dir():
        raise FileNotFoundError(f"no run store at {store.root} (set --runs or $CTCBOOK_RUNS)")
    runs = list(store.runs())
    damaged = [err for run in runs for err in run.damaged_files()]
    for err in damaged:
        print(f"DAMAGED {err}")
    files = sum(len(r.saved_epochs()) for r in runs)
    print(f"ctcbook check: {len(runs)} runs, {files} checkpoints in {store.root}: "
          + (f"{len(damaged)} damaged file(s)" if damaged else "all intact"))
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
