"""axolotl trains on `tfpack export --to axolotl` through its own entry point (`load_cfg` + `do_train`, what
`axolotl train` runs, on the README's recipe.yaml as written plus a tiny model and CPU settings), and the batches it
feeds the model hold the packs unchanged. Needs the `axolotl` extra (`make test-trainers` builds its venv); skipped
without it."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.export_checks import BatchRecorder, check_batches, save_tiny_model, shard_rows
from tfpack.cli import app

os.environ["AXOLOTL_DO_NOT_TRACK"] = "1"  # read when axolotl is imported: no telemetry from an offline test
pytest.importorskip("axolotl")


@pytest.mark.parametrize("mode", ["segment", "pack"])
def test_axolotl_trains_on_the_export(
    mode: str, packed: Path, packed_default: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.cli.train import do_train
    from transformers import LlamaForCausalLM

    out = packed if mode == "segment" else packed_default
    dest = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(out), "--to", "axolotl", "-o", str(dest)])
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load((dest / "recipe.yaml").read_text())
    config |= {
        "base_model": str(save_tiny_model(tmp_path / "model")),
        "output_dir": str(tmp_path / "ckpt"),
        "micro_batch_size": 1,  # with 2, multipack drops a last odd bin (its sampler's drop_last)
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "learning_rate": 1e-3,
        "optimizer": "adamw_torch",
        "val_set_size": 0,
        "save_strategy": "no",
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "logging_steps": 1,
    }
    path = tmp_path / "axolotl.yaml"
    path.write_text(yaml.safe_dump(config))
    recorder = BatchRecorder()
    forward = LlamaForCausalLM.forward

    @functools.wraps(forward)
    def recording_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        recorder(self, args, kwargs)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", recording_forward)
    do_train(load_cfg(str(path)), TrainerCliArgs())
    packs = shard_rows(out)
    # segment: no mask, transformers masks across the restarts of position_ids; pack: a 2D mask, one causal context
    assert recorder.batches and {b.get("attention_mask") is None for b in recorder.batches} == {mode == "segment"}
    check_batches(recorder.batches, packs, pad_id=0)
