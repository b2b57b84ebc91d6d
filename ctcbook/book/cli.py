"""The ``ctcbook`` command: run chapters, build the book, train one run."""
from __future__ import annotations

import argparse
import sys

from .profiles import PROFILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctcbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute chapter notebooks with papermill")
    run.add_argument("chapters", nargs="*", help="chapter names, e.g. 01_tradeoff (default: all)")
    run.add_argument("--profile", default="default", help=f"one of {sorted(PROFILES)}")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a notebook parameter (VALUE is YAML: 200, 0.05, [0,1,2], null)")
    run.add_argument("--output-dir", default=None, help="where executed notebooks go (default book/chapters)")

    book = sub.add_parser("book", help="build the HTML book from the executed chapters")
    book.add_argument("--warnings-as-errors", action="store_true", help="fail on any Sphinx warning")

    train = sub.add_parser("train", help="train (or reuse, or resume) one run")
    train.add_argument("--config", required=True, help="JSON file of TrainConfig fields")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    train.add_argument("--runs", default=None, help="run store folder (default $CTCBOOK_RUNS or ./runs)")

    sub.add_parser("list", help="list chapters, their parameters and the profiles")

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from . import runner

            overrides = {name: runner.parse_value(value) for name, value in args.parameter}
            kwargs = {"output_dir": args.output_dir} if args.output_dir else {}
            runner.run_chapters(args.chapters or None, args.profile, overrides, **kwargs)
        elif args.command == "book":
            from . import runner

            print(runner.build_book(warnings_as_errors=args.warnings_as_errors))
        elif args.command == "train":
            from .. import distributed
            from ..config import TrainConfig
            from ..runs import RunStore
            from ..train import train as train_run

            # Under torchrun every rank runs this; rank 0 alone writes the run folder and prints its path.
            run_ = train_run(TrainConfig.from_file(args.config), store=RunStore(args.runs), device=args.device)
            rank = distributed.from_env()
            distributed.cleanup(rank)
            if rank.main:
                print(run_.path)
        elif args.command == "list":
            from . import runner

            for chapter in runner.chapters():
                print(chapter, runner.notebook_parameters(chapter))
            print("profiles:", ", ".join(sorted(PROFILES)))
    except (ValueError, FileNotFoundError) as err:
        print(f"ctcbook: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a failed chapter or run: say what failed, exit non-zero
        from .runner import BookBuildError, ChapterFailedError
        from ..runs import RunFailedError

        if isinstance(err, (BookBuildError, ChapterFailedError, RunFailedError)):
            print(f"ctcbook: {err}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
