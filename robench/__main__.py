"""``python -m robench ...``: the same command line as the ``robench`` script."""
from robench.cli import main

if __name__ == "__main__":
    main()
