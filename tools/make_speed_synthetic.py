"""Render the embedded SPEED+-layout spacecraft data set (see lib/spacecraft/renderer.py).

Example: python tools/make_speed_synthetic.py --out data/speed_synthetic --train 300 --val 60
         --test 60 --seed 0 --width 640 --height 400 [--camera speedplus]
         [--domains lightbox sunlamp] [--domain-count 100]

--domains adds SPEED+'s lab test sets (out/<domain>/test.json, labels.json, images/): the same
pose distribution, pictured as under the light boxes or the sun lamp.
"""
import _init_paths  # noqa: F401, I001  (puts the repository root on sys.path)

import argparse
import sys

from lib.spacecraft.renderer import CAMERAS, DOMAINS, write_speed_synthetic


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created if absent)")
    parser.add_argument("--train", type=int, required=True, help="number of training images")
    parser.add_argument("--val", type=int, required=True, help="number of validation images")
    parser.add_argument("--test", type=int, required=True, help="number of test images")
    parser.add_argument("--seed", type=int, required=True, help="same seed, same bytes")
    parser.add_argument("--width", type=int, default=1920, help="image width (SPEED: 1920)")
    parser.add_argument("--height", type=int, default=1200, help="image height (SPEED: 1200)")
    parser.add_argument("--earth-fraction", type=float, default=0.3,
                        help="fraction of images with an Earth background")
    parser.add_argument("--distance", type=float, nargs=2, default=(3.0, 10.0),
                        metavar=("MIN", "MAX"),
                        help="camera distance range in metres (2.2-50; SPEED+: up to 10)")
    parser.add_argument("--camera", choices=sorted(CAMERAS), default="speed",
                        help="speed: SPEED's pinhole camera (default, faster); speedplus: the "
                             "real SPEED+ camera with its lens distortion (both scaled to the "
                             "image size)")
    parser.add_argument("--workers", type=int, default=0,
                        help="rendering processes (0: one per core); the bytes are the same")
    parser.add_argument("--domains", nargs="*", default=[], metavar="DOMAIN",
                        help=f"lab test domains to add ({', '.join(DOMAINS)}); none by default")
    parser.add_argument("--domain-count", type=int, default=None, metavar="N",
                        help="images per test domain (default: the --test count)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        counts = write_speed_synthetic(
            args.out, args.train, args.val, args.test, args.seed, width=args.width,
            height=args.height, earth_fraction=args.earth_fraction,
            distance_range=tuple(args.distance), show_progress=not args.quiet,
            camera=args.camera, workers=args.workers, domains=args.domains,
            num_domain=args.domain_count,
        )
    except ValueError as err:
        print(f"make_speed_synthetic.py: error: {err}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{count} {name}" for name, count in counts.items())
    print(f"wrote {summary} images ({args.width}x{args.height}, {args.camera} camera) "
          f"to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
