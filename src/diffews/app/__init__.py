"""`diffews app`: a local web page for few-shot segmentation (pure callbacks in `callbacks`, the Gradio page in `ui`)."""
