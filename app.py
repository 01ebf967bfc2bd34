"""DDPM explainer: a Gradio 6 app that explains denoising diffusion. This file builds the app and serves it.

Run ``python app.py``: it serves on 127.0.0.1:7860 (or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) with the
checkpoint in checkpoints/mnist-ddpm, or the folder named by $DDPM_EXPLAINER_CHECKPOINT. The widgets are in
explainer/ui/, what they show in explainer/views/, and the serving (request guard, session housekeeping, clean
shutdown) in explainer/server/.
"""
from __future__ import annotations

from explainer.server import launch as server
from explainer.server.launch import configure_threads, own_cache_folder, serve
from explainer.ui import CSS, build_app

__all__ = ["build_app", "launch", "main"]


def launch(demo, **kwargs):
    """Serve ``demo`` as ``python app.py`` does, with the page's style (scripts that start the app call this)."""
    return server.launch(demo, css=CSS, **kwargs)


def main() -> None:
    """Threads first (the model's fast path takes the same count), then the app with its own cache folder."""
    configure_threads()
    serve(build_app(cache_folder=own_cache_folder()), css=CSS)


if __name__ == "__main__":
    main()
