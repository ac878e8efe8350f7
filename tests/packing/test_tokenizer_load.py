"""`hf_tokenizer` loads what `AutoTokenizer` loads, and a generic tokenizer directory without importing torch; so does
`pack INPUT` with its defaults on CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import transformers
from transformers import AutoTokenizer

from tests.conftest import qa_rows, write_jsonl
from tests.packing.templates import QWEN25, build_bpe, with_template
from tfpack.embedding import models
from tfpack.packing.tokenizer import hf_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bpe = build_bpe(tmp_path_factory.mktemp("bpe"))
    return with_template(bpe, tmp_path_factory.mktemp("qwen"), QWEN25, "<|im_end|>", None)


def declared_as(source: Path, target: Path, tokenizer_class: str, config: dict[str, str] | None = None) -> Path:
    """A copy of the tokenizer directory `source` whose tokenizer_config.json names `tokenizer_class`."""
    target.mkdir()
    for f in source.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    declared = orjson.loads((target / "tokenizer_config.json").read_bytes())
    (target / "tokenizer_config.json").write_bytes(orjson.dumps({**declared, "tokenizer_class": tokenizer_class}))
    if config is not None:
        (target / "config.json").write_bytes(orjson.dumps(config))
    return target


@pytest.mark.parametrize(
    ("tokenizer_class", "config"),
    [
        ("TokenizersBackend", None),
        ("PreTrainedTokenizerFast", None),
        ("TokenizersBackend", {"model_type": "qwen2"}),
        ("Qwen2Tokenizer", None),
    ],
)
def test_same_tokenizer_as_auto_tokenizer(
    qwen_dir: Path, tmp_path: Path, tokenizer_class: str, config: dict[str, str] | None
) -> None:
    if not hasattr(transformers, tokenizer_class) and tokenizer_class != "Qwen2Tokenizer":
        pytest.skip(f"transformers {transformers.__version__} has no {tokenizer_class}")
    spec = str(declared_as(qwen_dir, tmp_path / "tok", tokenizer_class, config))
    ours, auto = hf_tokenizer(spec), AutoTokenizer.from_pretrained(spec)
    assert type(ours) is type(auto)
    assert ours.backend_tokenizer.to_str() == auto.backend_tokenizer.to_str()
    assert ours.chat_template == auto.chat_template
    assert ours.special_tokens_map == auto.special_tokens_map
    assert ours.all_special_tokens == auto.all_special_tokens
    assert (ours.eos_token_id, ours.sep_token_id) == (auto.eos_token_id, auto.sep_token_id)


@pytest.mark.skipif(
    not hasattr(transformers, "TokenizersBackend"),
    reason="transformers < 5 imports torch with its tokenizer classes (PreTrainedTokenizerFast)",
)
def test_generic_tokenizer_loads_and_tokenizes_without_torch(qwen_dir: Path) -> None:
    code = (
        "import sys\n"
        "from tfpack.ingest.formats import Conversation, Turn\n"
        "from tfpack.packing.tokenizer import load_tokenizer, tokenize_batch\n"
        f"tokenizer = load_tokenizer({str(qwen_dir)!r}, None)\n"
        "chat = Conversation((Turn('user', 'What is 2 plus 2?'), Turn('assistant', 'It is 4.')))\n"
        "(ids, labels, first), = tokenize_batch([chat], tokenizer, 'assistant')\n"
        "print(len(ids) > first, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["True", "False"]


@pytest.mark.skipif(
    not hasattr(transformers, "TokenizersBackend"),
    reason="transformers < 5 imports torch with its tokenizer classes (PreTrainedTokenizerFast)",
)
@pytest.mark.skipif(models.cuda_driver_loads(), reason="a CUDA driver is here: --device auto asks torch")
def test_pack_input_with_defaults_imports_no_torch_without_a_cuda_driver(qwen_dir: Path, tmp_path: Path) -> None:
    """The one command on single-exchange data with every default (model auto: static on CPU; device auto) runs
    without torch when no CUDA driver is present, so its 1-2 s import is not paid."""
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(12))
    code = (
        "import sys\n"
        "from tfpack.cli import app\n"
        f"app(['pack', {str(data)!r}, '-o', {str(tmp_path / 'out')!r}, '--tokenizer', {str(qwen_dir)!r}, '-q'],"
        " standalone_mode=False)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["False"]
    assert orjson.loads((tmp_path / "out" / "manifest.json").read_bytes())["embedding_model"] == "static"


def test_device_auto_without_a_cuda_driver_is_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "cuda_driver_loads", lambda: False)
    assert models.resolve_device("auto") == "cpu"
    assert models.resolve_device("cpu") == "cpu"
