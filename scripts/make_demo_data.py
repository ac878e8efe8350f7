"""Generate the demo dataset: realistic SFT samples over several topics, written in four input formats.

Everything is produced from templates and a seeded RNG (no downloaded data), with correct answers:
arithmetic word problems, unit conversions, small Python functions, country facts, and text rewriting.

    python scripts/make_demo_data.py --out demo/data --n 1600
writes `alpaca.json` (alpaca array), `chat.jsonl` (OpenAI messages, some multi-turn), `sharegpt.jsonl` and
`pairs.parquet` (prompt/completion).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

NAMES = ["Ava", "Ben", "Chloe", "Diego", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam"]
ITEMS = [("apples", 0.5), ("notebooks", 2.25), ("pencils", 0.75), ("tickets", 12.0), ("muffins", 1.5), ("bolts", 0.2)]
COUNTRIES = [
    ("France", "Paris", "Euro", "French"),
    ("Japan", "Tokyo", "Yen", "Japanese"),
    ("Brazil", "Brasília", "Real", "Portuguese"),
    ("Kenya", "Nairobi", "Shilling", "Swahili and English"),
    ("Canada", "Ottawa", "Canadian dollar", "English and French"),
    ("India", "New Delhi", "Rupee", "Hindi and English"),
    ("Egypt", "Cairo", "Egyptian pound", "Arabic"),
    ("Norway", "Oslo", "Krone", "Norwegian"),
    ("Mexico", "Mexico City", "Peso", "Spanish"),
    ("Vietnam", "Hanoi", "Dong", "Vietnamese"),
]
UNITS = [
    ("kilometres", "miles", 0.621371),
    ("kilograms", "pounds", 2.20462),
    ("litres", "US gallons", 0.264172),
    ("metres", "feet", 3.28084),
    ("Celsius degrees of difference", "Fahrenheit degrees of difference", 1.8),
]
FUNCS = [
    ("reverses a string", "reverse_string", "s: str", "str", "return s[::-1]", "reverse_string('abc') == 'cba'"),
    (
        "returns the sum of the even numbers in a list",
        "sum_even",
        "xs: list[int]",
        "int",
        "return sum(x for x in xs if x % 2 == 0)",
        "sum_even([1, 2, 3, 4]) == 6",
    ),
    (
        "counts the vowels in a string",
        "count_vowels",
        "s: str",
        "int",
        "return sum(1 for c in s.lower() if c in 'aeiou')",
        "count_vowels('Banana') == 3",
    ),
    (
        "checks whether a number is prime",
        "is_prime",
        "n: int",
        "bool",
        "if n < 2:\n        return False\n    return all(n % d for d in range(2, int(n ** 0.5) + 1))",
        "is_prime(13) is True",
    ),
    (
        "returns the n-th Fibonacci number",
        "fib",
        "n: int",
        "int",
        "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
        "fib(10) == 55",
    ),
    (
        "removes duplicates from a list while keeping order",
        "dedupe",
        "xs: list",
        "list",
        "seen = set()\n    return [x for x in xs if not (x in seen or seen.add(x))]",
        "dedupe([3, 1, 3, 2, 1]) == [3, 1, 2]",
    ),
]
SENTENCES = [
    "the meeting have been moved to thursday because several people was travelling",
    "our team are committed to deliver the project on time and within the budget we agreed",
    "she don't like when the printer jams every time someone print a long report",
    "there is many reasons why the new policy could improve customer satisfaction",
    "the results of the survey shows that most users prefers the dark theme",
]
STYLES = ["formal", "friendly", "concise"]


def word_problem(rng: random.Random) -> tuple[str, str]:
    name, (item, price) = rng.choice(NAMES), rng.choice(ITEMS)
    count, extra = rng.randint(3, 40), rng.randint(2, 15)
    total = count + extra
    cost = total * price
    question = (
        f"{name} buys {count} {item} on Monday and {extra} more on Tuesday. Each costs ${price:.2f}. "
        f"How much does {name} spend in total?"
    )
    answer = (
        f"{name} buys {count} + {extra} = {total} {item}.\nAt ${price:.2f} each, that is {total} × {price:.2f} = "
        f"${cost:.2f}.\nThe answer is ${cost:.2f}."
    )
    return question, answer


def unit_conversion(rng: random.Random) -> tuple[str, str]:
    src, dst, factor = rng.choice(UNITS)
    value = rng.randint(2, 500)
    return (
        f"Convert {value} {src} to {dst}.",
        f"Multiply by the conversion factor {factor}: {value} × {factor} = {value * factor:.2f} {dst}.",
    )


def python_function(rng: random.Random) -> tuple[str, str]:
    desc, name, args, ret, body, check = rng.choice(FUNCS)
    prompt = rng.choice(
        [
            "Write a Python function that {d}.",
            "Implement `{n}` in Python: it {d}.",
            "I need a Python helper that {d}. Please include type hints.",
        ]
    ).format(d=desc, n=name)
    answer = f"```python\ndef {name}({args}) -> {ret}:\n    {body}\n```\n\nFor example, `{check}`."
    return prompt, answer


def country_fact(rng: random.Random) -> tuple[str, str]:
    country, capital, currency, language = rng.choice(COUNTRIES)
    kind = rng.choice(["capital", "currency", "language"])
    answer = {
        "capital": f"The capital of {country} is {capital}.",
        "currency": f"The currency of {country} is the {currency}.",
        "language": f"The main language(s) spoken in {country}: {language}.",
    }[kind]
    return f"What is the {kind} of {country}?", answer


def rewrite(rng: random.Random) -> tuple[str, str]:
    sentence, style = rng.choice(SENTENCES), rng.choice(STYLES)
    fixed = (
        sentence.replace(" have been", " has been")
        .replace(" was ", " were ")
        .replace("are committed", "is committed")
        .replace("to deliver", "to delivering")
        .replace("don't", "doesn't")
        .replace("someone print", "someone prints")
        .replace("there is many", "there are many")
        .replace("shows", "show")
        .replace("prefers", "prefer")
    )
    fixed = fixed[0].upper() + fixed[1:] + "."
    return f'Rewrite this sentence in a {style} tone and fix its grammar: "{sentence}"', fixed


TOPICS: list[Callable[[random.Random], tuple[str, str]]] = [
    word_problem,
    unit_conversion,
    python_function,
    country_fact,
    rewrite,
]


def generate(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [rng.choice(TOPICS)(rng) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo/data"))
    parser.add_argument("--n", type=int, default=1600, help="total samples over the four files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = generate(args.n, args.seed)
    quarter = len(pairs) // 4
    alpaca, chat, sharegpt, plain = (
        pairs[:quarter],
        pairs[quarter : 2 * quarter],
        pairs[2 * quarter : 3 * quarter],
        pairs[3 * quarter :],
    )
    rows = [{"instruction": p, "input": "", "output": a} for p, a in alpaca]
    (args.out / "alpaca.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    with open(args.out / "chat.jsonl", "wb") as f:
        for i, (p, a) in enumerate(chat):
            messages = [{"role": "system", "content": "You are a helpful assistant."}] if i % 3 == 0 else []
            messages += [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
            if i % 4 == 0:
                messages += [
                    {"role": "user", "content": "Can you explain that in one sentence?"},
                    {"role": "assistant", "content": a.splitlines()[-1]},
                ]
            f.write(orjson.dumps({"messages": messages}) + b"\n")
    with open(args.out / "sharegpt.jsonl", "wb") as f:
        for p, a in sharegpt:
            f.write(
                orjson.dumps({"conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": a}]}) + b"\n"
            )
    table = pa.table({"prompt": [p for p, _ in plain], "completion": [a for _, a in plain]})
    pq.write_table(table, args.out / "pairs.parquet")
    print(f"wrote {len(pairs)} samples to {args.out}")


if __name__ == "__main__":
    main()
