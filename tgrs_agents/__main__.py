import gc
import sys

from .cli import main

try:
    sys.exit(main())
finally:
    # The process ends here: without this, the interpreter's final garbage collections walk every
    # object the run's imports made (numpy, matplotlib, pydantic, the SDKs), a third of a second.
    gc.freeze()
