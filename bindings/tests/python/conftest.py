"""Makes the generated bindings importable: scripts/bindings.sh writes them, with the library they
were generated from, into bindings/generated/python."""

import os
import sys

GENERATED = os.path.join(os.path.dirname(__file__), "..", "..", "generated", "python")
sys.path.insert(0, os.path.abspath(GENERATED))
