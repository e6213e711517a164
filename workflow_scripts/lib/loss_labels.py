"""The label of a token that is not trained on (PyTorch cross-entropy's ignore_index): prompts,
padding, and what a loss mask leaves out."""
IGNORE_INDEX = -100
