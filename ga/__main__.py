"""`python -m ga <command> [options]`: the `ga` command (ga.cli.main)."""

import sys

from ga.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m ga"))
