#!/usr/bin/env python
"""Train a model from a configuration. See: python main.py --help"""

import sys

from ga.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
