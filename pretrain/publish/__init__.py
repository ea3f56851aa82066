"""The publish stage: a loadable HF folder with a model card (`stage.py`, `card.py`), pushed to a hub (`hub.py`)."""
