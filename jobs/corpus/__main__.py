"""``python -m jobs.corpus OUTPUT [--seed N] [--scale X] [--workers N] [--risk]``: generate a sample corpus."""

from __future__ import annotations

import argparse

from jobs.corpus.build import make_corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.corpus", description=__doc__)
    parser.add_argument("output", help="s3://bucket/prefix or a local folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scenes", type=int, default=None, help="number of scenes (overrides --scale)")
    parser.add_argument("--videos", type=int, default=None, help="number of videos (overrides --scale)")
    parser.add_argument("--risk", action="store_true", help="add a binary risk label to every image")
    args = parser.parse_args(argv)
    summary = make_corpus(
        args.output, args.seed, args.scale, args.workers, progress=print, n_scenes=args.scenes, n_videos=args.videos,
        risk=args.risk,
    )  # fmt: skip
    print(summary)


if __name__ == "__main__":
    main()
