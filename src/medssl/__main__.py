"""``python -m medssl``."""

from medssl.cli import main

main()
