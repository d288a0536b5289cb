"""``python -m sentrycam.projector [--clear]``: print (or delete) the projector's numba cache
folder (see :mod:`sentrycam.projector.jit_cache`); this command's own output."""

import argparse

from sentrycam.projector.jit_cache import cache_dir, clear


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sentrycam.projector",
                                     description="The projector's numba cache folder.")
    parser.add_argument("--clear", action="store_true", help="delete the folder")
    args = parser.parse_args(argv)
    print(f"removed {clear()}" if args.clear else cache_dir())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
