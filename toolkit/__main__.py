"""`python -m toolkit` is the same as the `keras-edge` command."""

from toolkit.cli.app import main

if __name__ == "__main__":
    main()
