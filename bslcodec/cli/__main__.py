"""``python -m bslcodec.cli ...`` (and ``torchrun ... -m bslcodec.cli encode ...``)."""

from . import main

if __name__ == "__main__":
    main()
