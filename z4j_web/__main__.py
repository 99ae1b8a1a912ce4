"""``python -m z4j_web`` runs the ``z4j`` command."""

from z4j_web.cli import main

if __name__ == "__main__":
    main(prog_name="z4j")
