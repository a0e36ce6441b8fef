"""``python -m kdasr`` (what torchrun launches: ``torchrun ... -m kdasr train ...``)."""
from kdasr.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="kdasr")
