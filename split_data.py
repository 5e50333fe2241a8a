#!/usr/bin/env python
"""Split class folders into train/valid/test. See: python split_data.py --help"""

import sys

from ga.cli import split_main

if __name__ == "__main__":
    sys.exit(split_main())
