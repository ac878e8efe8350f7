"""A census-like CSV in the shape of adult-census-income (not the real data set): seeded, with an income label that
depends on the other columns, and some empty cells where the real data has missing values.

    python -m tests.census /tmp/adult.csv --rows 12000
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
EDUCATION = [
    ("HS-grad", 9),
    ("Some-college", 10),
    ("Bachelors", 13),
    ("Masters", 14),
    ("Assoc-voc", 11),
    ("11th", 7),
    ("Doctorate", 16),
    ("Prof-school", 15),
]
WORKCLASS = ["Private", "Self-emp-not-inc", "Local-gov", "State-gov", "Federal-gov", "Self-emp-inc"]
MARITAL = ["Married-civ-spouse", "Never-married", "Divorced", "Separated", "Widowed"]
OCCUPATION = [
    "Prof-specialty",
    "Craft-repair",
    "Exec-managerial",
    "Adm-clerical",
    "Sales",
    "Other-service",
    "Machine-op-inspct",
    "Tech-support",
]
SINGLE = ["Not-in-family", "Own-child", "Unmarried"]
RACE = ["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"]
COUNTRY = ["United-States", "Mexico", "Philippines", "Germany", "Canada", "India"]


def census_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` rows as CSV text; about a quarter earn >50K, mostly the older, educated, married and hard-working."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        age = rng.randint(17, 80)
        education, years = rng.choice(EDUCATION)
        marital = rng.choice(MARITAL)
        sex = rng.choice(["Male", "Female"])
        married = marital == "Married-civ-spouse"
        relationship = ("Husband" if sex == "Male" else "Wife") if married else rng.choice(SINGLE)
        hours = max(1, min(99, round(rng.gauss(40, 12))))
        gain = rng.choice([0] * 12 + [rng.randint(1000, 99999)])
        score = (years - 9) * 0.45 + married * 1.4 + (hours - 40) * 0.04
        score += min(age - 17, 35) * 0.05 + (gain > 5000) * 2.5 + rng.gauss(0, 1.0)
        rows.append(
            {
                "age": str(age),
                "workclass": "" if rng.random() < 0.05 else rng.choice(WORKCLASS),
                "fnlwgt": str(rng.randint(12285, 1484705)),
                "education": education,
                "education_num": str(years),
                "marital_status": marital,
                "occupation": "" if rng.random() < 0.05 else rng.choice(OCCUPATION),
                "relationship": relationship,
                "race": rng.choices(RACE, weights=[85, 9, 3, 1, 2])[0],
                "sex": sex,
                "capital_gain": str(gain),
                "capital_loss": str(rng.choice([0] * 20 + [rng.randint(100, 4356)])),
                "hours_per_week": str(hours),
                "native_country": rng.choices(COUNTRY, weights=[90, 3, 2, 2, 2, 1])[0],
                "income": ">50K" if score > 4.3 else "<=50K",
            }
        )
    return rows


def write_census_csv(path: Path, n: int, seed: int = 0) -> Path:
    """Write `n` census-like rows with a header to `path` (CSV)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(census_rows(n, seed))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_census_csv(args.out, args.rows, args.seed)
