"""``python -m gitckpt``: the same as the ``gitckpt`` command."""

from gitckpt.cli import main

if __name__ == "__main__":
    main()
