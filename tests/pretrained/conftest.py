import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """family -> a random-initialised checkpoint directory with its own tokenizer (vocab 1500)."""
    from checkpoints import make_checkpoint
    root = tmp_path_factory.mktemp("ckpt")
    return {f: make_checkpoint(f, root / f, vocab_size=1500) for f in ("llama", "qwen2", "gpt2", "qwen3", "gpt_neox")}
