"""Hugging Face Space entry point: `python app.py` (HAR_MODEL = model folder or Hub id).

Without HAR_MODEL: the model bundled in model/ (a Space from publish-space), else outputs/har15, else the first
model named in `models:` of README.md's front matter (see har_model.serve.model).

Everything lives in har_model.serve.ui; this file only builds the app and launches it.
"""

from har_model.serve.ui import build_demo, launch_kwargs

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**launch_kwargs(demo.har_handle))
