"""Models for serving: a fine-tuned model with Google's tokenizer in its graph, as a SavedModel
that takes raw text (`saved_model.py`)."""
