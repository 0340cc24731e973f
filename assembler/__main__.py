"""``python -m assembler`` is the ``assemble`` command."""

from assembler.cli import run

if __name__ == "__main__":
    run()
