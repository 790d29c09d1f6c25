import os

# tests never reach a wandb server, and keep the recipe smoke test's torch single-threaded
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
