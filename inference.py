#!/usr/bin/env python
"""Label a folder of images with a trained model. See: python inference.py --help"""

import sys

from ga.cli import inference_main

if __name__ == "__main__":
    sys.exit(inference_main())
