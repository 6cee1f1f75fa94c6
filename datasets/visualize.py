"""`python -m datasets.visualize`, the old name of `python -m tools.visualize_dataset`, runs it.

The program reads through the library's data path, which datasets/ sits below, so it lives in
tools/; this file only runs it: no module imports this file, and it imports no project module.
"""

import runpy

if __name__ == "__main__":
  runpy.run_module("tools.visualize_dataset", run_name="__main__", alter_sys=True)
