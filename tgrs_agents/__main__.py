import gc
import sys

from .cli import main

rc = main()
# The process ends here: without this, the interpreter's final garbage collections walk every
# object the run's imports made (numpy, matplotlib, pydantic, the SDKs), a third of a second.
gc.freeze()
sys.exit(rc)
