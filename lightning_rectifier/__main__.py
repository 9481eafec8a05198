"""``python -m lightning_rectifier`` runs the command line (same as ``lightning-rectifier``)."""

from lightning_rectifier.cli import main

if __name__ == "__main__":
    main()
