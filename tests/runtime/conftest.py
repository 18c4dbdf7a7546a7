"""The tiny run fixtures of tests/export/conftest.py, shared here (loaded by path: tests/ is not a package)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("export_conftest", Path(__file__).parents[1] / "export" / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)

exported_run = _shared.exported_run
run_copy = _shared.run_copy
config_of = _shared.config_of
fresh_run = _shared.fresh_run
command = _shared.command
