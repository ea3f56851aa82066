"""The publish stage: a loadable HF folder with a model card."""
