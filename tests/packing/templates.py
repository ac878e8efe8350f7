"""A gallery of chat templates written for the tests, each reproducing the behaviour of a popular model family, with
the assistant text each one trains (what the model must learn to generate for each assistant turn).

`EXPECTED[family](messages)` gives, per assistant message, the text its trained tokens must decode to (whitespace at
the ends aside), or raises `Refuses` when the family's own template refuses that conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Messages = list[dict[str, Any]]


class Refuses(Exception):
    """The family's template raises on this conversation (e.g. a system turn where it has no system role)."""


QWEN25 = """
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- set tc = tool_call.function if tool_call.function is defined else tool_call %}
{{- '\\n<tool_call>\\n{"name": "' + tc.name + '", "arguments": ' + (tc.arguments | tojson) + '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

QWEN3 = """
{%- if messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_user=-1) %}
{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}
{%- for message in messages %}
{%- if message.role == 'assistant' %}
{%- set content = message.content %}
{%- set reasoning = '' %}
{%- if '</think>' in content %}
{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
{%- set content = content.split('</think>')[-1].lstrip('\\n') %}
{%- endif %}
{%- if loop.index0 > ns.last_user %}
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
{%- endif %}
{%- elif not (message.role == 'system' and loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

DEEPSEEK_R1 = """
{{- bos_token }}
{%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' %}{{- '<｜User｜>' + message.content }}
{%- elif message.role == 'assistant' %}
{%- set content = message.content %}
{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}
{{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<｜Assistant｜><think>\\n' }}{%- endif %}
"""

LLAMA3 = """
{{- bos_token }}
{%- if messages[0].role == 'system' %}
{%- set system_message = messages[0].content | trim %}
{%- set messages = messages[1:] %}
{%- else %}
{%- set system_message = '' %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}
{{- 'Cutting Knowledge Date: December 2023\\n' }}
{{- 'Today Date: ' + strftime_now('%d %b %Y') + '\\n\\n' }}
{{- system_message + '<|eot_id|>' }}
{%- for message in messages %}
{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}
"""

MISTRAL_V03 = """
{%- if messages[0]['role'] == 'system' %}
{%- set system_message = messages[0]['content'] %}
{%- set loop_messages = messages[1:] %}
{%- else %}
{%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/...') }}
{%- endif %}
{%- if message['role'] == 'user' %}
{%- if loop.last and system_message is defined %}
{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}
{%- else %}
{{- '[INST] ' + message['content'] + '[/INST]' }}
{%- endif %}
{%- elif message['role'] == 'assistant' %}
{{- ' ' + message['content'] | trim + eos_token }}
{%- endif %}
{%- endfor %}
"""

GEMMA = """
{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}{{- raise_exception('System role not supported') }}{%- endif %}
{%- for message in messages %}
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{%- endif %}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}
{{- '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}
"""

# Written for Hugging Face's Jinja settings: without trim_blocks/lstrip_blocks it renders indentation and blank lines.
PHI3_TRIM = """{% for message in messages %}
    {% if message['role'] == 'system' %}
<|system|>
{{ message['content'] }}<|end|>
    {% elif message['role'] == 'user' %}
<|user|>
{{ message['content'] }}<|end|>
    {% elif message['role'] == 'assistant' %}
<|assistant|>
{{ message['content'] }}<|end|>
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|assistant|>
{% endif %}"""

CHATML_GENERATION = """
{%- for message in messages %}
{%- if message['role'] == 'assistant' %}
{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}
{%- else %}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""


def _assistants(messages: Messages) -> list[dict[str, Any]]:
    return [m for m in messages if m["role"] == "assistant"]


def _qwen25(messages: Messages) -> list[str]:
    out = []
    for m in _assistants(messages):
        calls = "".join(
            f'\n<tool_call>\n{{"name": "{c["function"]["name"]}", "arguments": {_json(c["function"]["arguments"])}}}'
            "\n</tool_call>"
            for c in m.get("tool_calls") or []
        )
        out.append(((m.get("content") or "") + calls).lstrip("\n") + "<|im_end|>")
    return out


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _split_think(content: str) -> tuple[str, str]:
    if "</think>" not in content:
        return "", content
    reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return reasoning, content.split("</think>")[-1].lstrip("\n")


def _qwen3(messages: Messages) -> list[str]:
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    out = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        reasoning, content = _split_think(m["content"])
        if i > last_user:
            out.append(f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{content}<|im_end|>")
        else:
            out.append(content + "<|im_end|>")
    return out


def _deepseek(messages: Messages) -> list[str]:
    return [m["content"].split("</think>")[-1] + "<｜end▁of▁sentence｜>" for m in _assistants(messages)]


def _llama3(messages: Messages) -> list[str]:
    return [m["content"].strip() + "<|eot_id|>" for m in _assistants(messages)]


def _mistral(messages: Messages) -> list[str]:
    rest = messages[1:] if messages[0]["role"] == "system" else messages
    if any((m["role"] == "user") != (i % 2 == 0) for i, m in enumerate(rest)):
        raise Refuses("roles must alternate")
    return [m["content"].strip() + "</s>" for m in _assistants(messages)]


def _gemma(messages: Messages) -> list[str]:
    if messages[0]["role"] == "system":
        raise Refuses("System role not supported")
    return [m["content"].strip() + "<end_of_turn>" for m in _assistants(messages)]


def _phi3(messages: Messages) -> list[str]:
    return [m["content"] + "<|end|>" for m in _assistants(messages)]


def _chatml(messages: Messages) -> list[str]:
    return [m["content"] + "<|im_end|>" for m in _assistants(messages)]


# family: (template, eos token, bos token, expected assistant texts)
FAMILIES: dict[str, tuple[str, str, str | None, Callable[[Messages], list[str]]]] = {
    "qwen2.5 (ChatML, default system prompt, tools)": (QWEN25, "<|im_end|>", None, _qwen25),
    "qwen3 (earlier reasoning stripped)": (QWEN3, "<|im_end|>", None, _qwen3),
    "deepseek-r1 (generation prompt opens <think>)": (
        DEEPSEEK_R1,
        "<｜end▁of▁sentence｜>",
        "<｜begin▁of▁sentence｜>",
        _deepseek,
    ),
    "llama-3 (headers, date line)": (LLAMA3, "<|eot_id|>", "<|begin_of_text|>", _llama3),
    "mistral-v0.3 (system in last user turn)": (MISTRAL_V03, "</s>", "<s>", _mistral),
    "gemma (no system role)": (GEMMA, "<eos>", "<bos>", _gemma),
    "phi-3 (trim_blocks/lstrip_blocks)": (PHI3_TRIM, "<|endoftext|>", None, _phi3),
    "chatml with {% generation %}": (CHATML_GENERATION, "<|im_end|>", None, _chatml),
}

SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "<bos>",
    "<eos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|endoftext|>",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
]
# Added but not special (as Qwen's tokenizers have them): the template text around reasoning and tool calls.
ADDED_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

WEATHER_PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": WEATHER_PARAMETERS,
        },
    }
]

CONVERSATIONS: dict[str, Messages] = {
    "single-turn": [
        {"role": "user", "content": "What is 7 times 6?"},
        {"role": "assistant", "content": "7 times 6 is 42."},
    ],
    "system": [
        {"role": "system", "content": "You are a terse math tutor."},
        {"role": "user", "content": "What is 12 minus 5?"},
        {"role": "assistant", "content": "12 minus 5 is 7."},
    ],
    "multi-turn": [
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "  Seven is prime.  "},
        {"role": "user", "content": "And an even one?"},
        {"role": "assistant", "content": "Two is the only even prime."},
    ],
}
REASONING: Messages = [
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "<think>\nTwo and three make five.\n</think>\n\nIt is 5."},
    {"role": "user", "content": "And 3 times 4?"},
    {"role": "assistant", "content": "<think>\nThree fours are twelve.\n</think>\n\nIt is 12."},
]
TOOL_CALLS: Messages = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "18 degrees, sunny"},
    {"role": "assistant", "content": "It is 18 degrees and sunny in Paris."},
]

# Mistral v0.3 with `{% generation %}` around what the model writes (TRL ships no training variant for it): the space
# after `[/INST]` (a SentencePiece model generates `▁word`), the assistant's text and its `</s>`.
_MISTRAL_ANSWER = "{{- ' ' + message['content'] | trim + eos_token }}"
MISTRAL_V03_GENERATION = MISTRAL_V03.replace(
    _MISTRAL_ANSWER, "{% generation %}" + _MISTRAL_ANSWER + "{% endgeneration %}"
)


def train_bpe(path: Path, corpus: list[str], vocab_size: int = 800) -> Path:
    """A byte-level BPE (any text encodes) trained on `corpus`, with the gallery's special and added tokens, saved as
    a fast tokenizer without a chat template in `path`. No download."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rust = RustTokenizer(models.BPE())
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=SPECIAL_TOKENS
    )
    rust.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=rust, eos_token="<|endoftext|>")
    hf.add_tokens(ADDED_TOKENS)
    hf.save_pretrained(path)
    return path


def with_template(bpe_dir: Path, path: Path, template: str, eos: str, bos: str | None) -> Path:
    """The tokenizer in `bpe_dir` saved to `path` with a family's chat template, EOS and BOS, as a model ships it."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(bpe_dir)
    hf.chat_template = template
    hf.eos_token = eos
    if bos is not None:
        hf.bos_token = bos
    hf.save_pretrained(path)
    return path


def build_bpe(path: Path, corpus: list[str] | None = None) -> Path:
    """`train_bpe` on the gallery's conversations (plus `corpus`): the tokenizer the template tests share."""
    import json

    texts = [json.dumps(c) for c in [*CONVERSATIONS.values(), REASONING, TOOL_CALLS, TOOLS]] * 20
    return train_bpe(path, texts + (corpus or []))


def family_tokenizer(bpe_dir: Path, family: str, path: Path) -> Path:
    """The BPE in `bpe_dir` with `family`'s chat template, EOS and BOS (`FAMILIES`), saved in `path`."""
    template, eos, bos, _ = FAMILIES[family]
    return with_template(bpe_dir, path, template, eos, bos)
