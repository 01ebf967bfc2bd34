"""Serving the web app: the request guard and argument checks, session and file housekeeping, the allocator
settings, launch and clean shutdown (``launch``). Gradio's private attributes are read in ``gradio_internals``
only. Nothing here builds widgets: that is ``explainer.ui``, which imports this package, never the reverse."""
