"""`python -m robovla.train ...` (what torchrun runs): the same options as `robovla train`."""

import sys

from robovla.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
