"""The README's code is what runs: its TRL recipe is executed as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import tiny_llama

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(marker: str) -> list[str]:
    """The README's ```python blocks that contain `marker`."""
    return [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if marker in b]


def test_readme_trl_recipe_runs_as_written(
    packed_default: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TRL block, run in a directory where `packed/` is a `tfpack pack` output, with `model` and `tokenizer` bound
    (a tiny random Llama; the packaged tokenizer). The only edit is a test budget added to its SFTConfig: 2 steps on
    the CPU, no reporting or checkpoint."""
    pytest.importorskip("trl")
    from tfpack.tokenize import load_tokenizer

    [block] = python_blocks("SFTTrainer")
    os.symlink(packed_default, tmp_path / "packed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DISABLED", "true")
    namespace = {"model": tiny_llama(), "tokenizer": load_tokenizer("packaged-minilm", None).hf}
    code = block.replace("per_device_train_batch_size=1,", "per_device_train_batch_size=1, max_steps=2, "
                         "report_to=[], use_cpu=True, save_strategy='no',")
    assert code != block, "the README's TRL block changed shape: update this test's step cap"
    exec(compile(code, str(README), "exec"), namespace)
    history = namespace["trainer"].state.log_history
    assert namespace["trainer"].state.global_step == 2 and history

