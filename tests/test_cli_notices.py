"""What the ``refocus`` process prints of the library's logging and warnings."""

from __future__ import annotations

import subprocess
import sys

#: The process as the console script sets it up, then what the preparation of a model
#: does: ONNX Runtime's quantiser logs on the root logger (installing basicConfig's
#: handler), the library logs a quiet record and a notice, and warns.
_PROCESS = """
import logging, warnings
from rich.console import Console
from refocus.cli.notices import own_the_terminal, show_notices

own_the_terminal()
show_notices(Console())
logging.info("calibrating")
log = logging.getLogger("refocus.inference.backends")
log.info("fastest within the quality budget: bf16")
log.info("preparing this model for this computer, once", extra={"notice": True})
warnings.warn("int8 changes PSNR by 1.1 dB; not using it by default", stacklevel=1)
log.warning("tile shrunk to fit memory")
"""


def test_the_process_prints_each_notice_and_warning_once_as_one_plain_line() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROCESS], capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout == "preparing this model for this computer, once\n"
    assert proc.stderr.splitlines() == [
        "warning: int8 changes PSNR by 1.1 dB; not using it by default",
        "tile shrunk to fit memory",
    ]
