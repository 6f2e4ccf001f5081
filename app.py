"""Hugging Face Space entry point: `python app.py` (HAR_MODEL = model folder or Hub id).

Without HAR_MODEL: the model bundled in model/ (a Space from publish-space), else outputs/har15, else the first
model named in `models:` of README.md's front matter (see har_model.serve.model).

The model is loaded once and shared by every request; the page (har_model.serve.ui) binds its methods.
"""

import sys

from har_model.errors import HarError
from har_model.serve.ui import Settings, build_demo, launch_kwargs, load_model

try:
    settings = Settings.from_env()
except HarError as exc:  # a bad HAR_* setting: one line each, no traceback
    sys.exit("\n".join(f"error: {line}" for line in str(exc).splitlines()))
model = load_model(backend=settings.backend, settings=settings)
demo = build_demo(model, settings)

if __name__ == "__main__":
    demo.launch(**launch_kwargs(model, settings))
