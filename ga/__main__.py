"""`python -m ga split|train|infer [options]`: the three commands of split_data.py, main.py
and inference.py (also installed as ga-split, ga-train and ga-infer)."""

import sys

from ga.cli import COMMANDS


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        names = "|".join(COMMANDS)
        stream = sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr
        print(f"usage: python -m ga {{{names}}} [options]  (python -m ga <command> --help)", file=stream)
        return 0 if stream is sys.stdout else 2
    return COMMANDS[argv[0]](argv[1:], prog=f"python -m ga {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
