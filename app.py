"""Hugging Face Space entry point: `python app.py` (HAR_MODEL = model folder or Hub id; default outputs/har15).

Everything lives in har_model.serve.ui; this file only builds the app and launches it.
"""

from har_model.serve.ui import build_demo, launch_kwargs

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**launch_kwargs(demo.har_handle))
