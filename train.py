#!/usr/bin/env python
"""Fine-tune an action classifier: python train.py --data-dir DIR --output-dir OUT (see --help)."""

import sys

from har_model.cli import main

if __name__ == "__main__":
    sys.exit(main())
