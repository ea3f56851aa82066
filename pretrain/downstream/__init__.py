"""Fine-tuning and scoring encoders on downstream tasks (the downstream stage)."""
