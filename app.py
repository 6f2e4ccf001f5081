"""Hugging Face Space entry point: `python app.py` (HAR_MODEL = model folder or Hub id).

Without HAR_MODEL: the model bundled in model/ (a Space from publish-space), else outputs/har15, else the first
model named in `models:` of README.md's front matter (see har_model.serve.model).

Everything lives in har_model.serve.ui; this file only builds the app and launches it.
"""

import sys

from har_model.errors import HarError
from har_model.serve.ui import build_demo, launch_kwargs

try:
    demo = build_demo()
except HarError as exc:  # a bad HAR_* setting: one line each, no traceback
    sys.exit("\n".join(f"error: {line}" for line in str(exc).splitlines()))

if __name__ == "__main__":
    demo.launch(**launch_kwargs(demo.har_handle))
