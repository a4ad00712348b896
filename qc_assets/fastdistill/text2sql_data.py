"""Synthetic Text2SQL data: SQLite databases, bilingual template questions with gold SQL, a split.

No public Text2SQL set can be downloaded here, so the project writes its own: two WikiSQL-like
single-table databases and two with joins, filled from a seeded RNG; questions in English and
Chinese from templates whose slots are filled with values that exist in the data, so every gold
query returns rows. Everything is deterministic for a seed.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TASK_ID = "text2sql"

_BRANDS = ["Acme", "Nova", "Lumen", "海尔", "小米", "Orion"]
_CATEGORIES = ["laptop", "phone", "tablet", "monitor", "router", "camera"]
_CITIES = [
    ("Berlin", "Germany"),
    ("Munich", "Germany"),
    ("Lyon", "France"),
    ("Paris", "France"),
    ("杭州", "China"),
    ("成都", "China"),
    ("Osaka", "Japan"),
    ("Sapporo", "Japan"),
    ("Porto", "Portugal"),
    ("Lisbon", "Portugal"),
    ("深圳", "China"),
    ("Nice", "France"),
]
_PEOPLE = ["Alice", "Bob", "Chen Wei", "李娜", "王强", "Dana", "Emil", "Farah", "张敏", "Gita", "Hugo", "刘洋"]
_TEACHERS = ["Ms. Park", "Mr. Olsen", "赵老师", "孙老师"]
_STATUSES = ["paid", "shipped", "cancelled"]

SCHEMAS = {
    "products": """CREATE TABLE products (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  brand TEXT NOT NULL,
  category TEXT NOT NULL,
  price REAL NOT NULL,
  stock INTEGER NOT NULL
);""",
    "cities": """CREATE TABLE cities (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country TEXT NOT NULL,
  population INTEGER NOT NULL,
  area_km2 REAL NOT NULL
);""",
    "school": """CREATE TABLE classes (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  teacher TEXT NOT NULL,
  grade INTEGER NOT NULL
);
CREATE TABLE students (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  class_id INTEGER NOT NULL REFERENCES classes(id),
  age INTEGER NOT NULL,
  score REAL NOT NULL
);""",
    "shop_orders": """CREATE TABLE customers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  city TEXT NOT NULL
);
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  amount REAL NOT NULL,
  status TEXT NOT NULL
);""",
}


def _fill_products(rng: random.Random) -> dict[str, list[tuple]]:
    rows = []
    for i in range(1, 31):
        brand, category = rng.choice(_BRANDS), rng.choice(_CATEGORIES)
        rows.append(
            (
                i,
                f"{brand} {category.title()} {i}",
                brand,
                category,
                round(rng.uniform(49, 2999), 2),
                rng.randint(0, 500),
            )
        )
    return {"products": rows}


def _fill_cities(rng: random.Random) -> dict[str, list[tuple]]:
    rows = [
        (i, name, country, rng.randint(200_000, 15_000_000), round(rng.uniform(40, 1500), 1))
        for i, (name, country) in enumerate(_CITIES, start=1)
    ]
    return {"cities": rows}


def _fill_school(rng: random.Random) -> dict[str, list[tuple]]:
    classes = [(i, f"Class {c}", _TEACHERS[i % len(_TEACHERS)], 7 + i % 3) for i, c in enumerate("ABCD", start=1)]
    students = [
        (i, name, rng.randint(1, 4), rng.randint(12, 16), round(rng.uniform(50, 100), 1))
        for i, name in enumerate(_PEOPLE, start=1)
    ]
    return {"classes": classes, "students": students}


def _fill_orders(rng: random.Random) -> dict[str, list[tuple]]:
    customers = [(i, name, rng.choice(_CITIES)[0]) for i, name in enumerate(_PEOPLE[:8], start=1)]
    orders = [(i, rng.randint(1, 8), round(rng.uniform(5, 900), 2), rng.choice(_STATUSES)) for i in range(1, 41)]
    return {"customers": customers, "orders": orders}


_FILLERS: dict[str, Callable[[random.Random], dict[str, list[tuple]]]] = {
    "products": _fill_products,
    "cities": _fill_cities,
    "school": _fill_school,
    "shop_orders": _fill_orders,
}


@dataclass(frozen=True)
class Template:
    db_id: str
    en: str
    zh: str
    sql: str
    # SQL that lists candidate slot values (each row a tuple matching the slot names, in order).
    slots_sql: str | None = None
    slot_names: tuple[str, ...] = ()


TEMPLATES = [
    Template(
        "products",
        "How many products are in the {v} category?",
        "{v}类别里有多少种产品？",
        "SELECT COUNT(*) FROM products WHERE category = '{v}'",
        "SELECT DISTINCT category FROM products",
        ("v",),
    ),
    Template(
        "products",
        "What is the price of {v}?",
        "{v}的价格是多少？",
        "SELECT price FROM products WHERE name = '{v}'",
        "SELECT name FROM products",
        ("v",),
    ),
    Template(
        "products",
        "What is the average price of {v} products?",
        "{v}品牌产品的平均价格是多少？",
        "SELECT AVG(price) FROM products WHERE brand = '{v}'",
        "SELECT DISTINCT brand FROM products",
        ("v",),
    ),
    Template(
        "products",
        "List the names of products with fewer than {v} units in stock.",
        "列出库存少于{v}件的产品名称。",
        "SELECT name FROM products WHERE stock < {v}",
        "SELECT stock + 1 FROM products",
        ("v",),
    ),
    Template(
        "products",
        "Which product has the highest price?",
        "哪个产品价格最高？",
        "SELECT name FROM products ORDER BY price DESC LIMIT 1",
    ),
    Template(
        "cities",
        "What is the population of {v}?",
        "{v}的人口是多少？",
        "SELECT population FROM cities WHERE name = '{v}'",
        "SELECT name FROM cities",
        ("v",),
    ),
    Template(
        "cities",
        "How many cities are in {v}?",
        "{v}有多少个城市？",
        "SELECT COUNT(*) FROM cities WHERE country = '{v}'",
        "SELECT DISTINCT country FROM cities",
        ("v",),
    ),
    Template(
        "cities",
        "List the cities in {v} ordered by population from largest to smallest.",
        "按人口从多到少列出{v}的城市。",
        "SELECT name FROM cities WHERE country = '{v}' ORDER BY population DESC",
        "SELECT DISTINCT country FROM cities",
        ("v",),
    ),
    Template(
        "cities",
        "What is the total area of cities in {v}?",
        "{v}所有城市的总面积是多少？",
        "SELECT SUM(area_km2) FROM cities WHERE country = '{v}'",
        "SELECT DISTINCT country FROM cities",
        ("v",),
    ),
    Template(
        "school",
        "How many students are in {v}?",
        "{v}有多少名学生？",
        "SELECT COUNT(*) FROM students JOIN classes ON students.class_id = classes.id WHERE classes.name = '{v}'",
        "SELECT DISTINCT c.name FROM classes c JOIN students s ON s.class_id = c.id",
        ("v",),
    ),
    Template(
        "school",
        "What is the average score of students taught by {v}?",
        "{v}教的学生平均分是多少？",
        "SELECT AVG(students.score) FROM students JOIN classes ON students.class_id = classes.id "
        "WHERE classes.teacher = '{v}'",
        "SELECT DISTINCT c.teacher FROM classes c JOIN students s ON s.class_id = c.id",
        ("v",),
    ),
    Template(
        "school",
        "Which students are older than {v}?",
        "哪些学生的年龄大于{v}岁？",
        "SELECT name FROM students WHERE age > {v}",
        "SELECT age - 1 FROM students",
        ("v",),
    ),
    Template(
        "shop_orders",
        "What is the total amount of orders from customers in {v}?",
        "来自{v}的客户的订单总金额是多少？",
        "SELECT SUM(orders.amount) FROM orders JOIN customers ON orders.customer_id = customers.id "
        "WHERE customers.city = '{v}'",
        "SELECT DISTINCT c.city FROM customers c JOIN orders o ON o.customer_id = c.id",
        ("v",),
    ),
    Template(
        "shop_orders",
        "How many orders have the status {v}?",
        "状态为{v}的订单有多少个？",
        "SELECT COUNT(*) FROM orders WHERE status = '{v}'",
        "SELECT DISTINCT status FROM orders",
        ("v",),
    ),
    Template(
        "shop_orders",
        "List the names of customers who placed an order above {v}.",
        "列出下过金额超过{v}的订单的客户姓名。",
        "SELECT DISTINCT customers.name FROM customers JOIN orders ON orders.customer_id = customers.id "
        "WHERE orders.amount > {v}",
        "SELECT CAST(amount AS INTEGER) - 1 FROM orders",
        ("v",),
    ),
]


def build_databases(out_dir: Path, seed: int) -> dict[str, Path]:
    """Write one SQLite file per database id; returns {db_id: path}. Rewrites are deterministic."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for db_id, filler in _FILLERS.items():
        rng = random.Random(f"{seed}:{db_id}")
        path = out_dir / f"{db_id}.db"
        tmp = path.with_suffix(".db.tmp")
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp)
        conn.executescript(SCHEMAS[db_id])
        for table, rows in filler(rng).items():
            conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        conn.commit()
        conn.close()
        tmp.replace(path)
        paths[db_id] = path
    return paths


def _slot_values(conn: sqlite3.Connection, template: Template) -> list[tuple]:
    if template.slots_sql is None:
        return [()]
    return sorted({tuple(row) for row in conn.execute(template.slots_sql)}, key=repr)


def generate_examples(db_paths: dict[str, Path], seed: int, per_template: int = 3) -> list[dict]:
    """Questions in both languages for each template and sampled slot value, with gold SQL."""
    if per_template < 1:
        raise ValueError(f"per_template must be >= 1, got {per_template}")
    rng = random.Random(seed)
    examples = []
    for t_index, template in enumerate(TEMPLATES):
        if template.db_id not in db_paths:
            raise ValueError(f"template db_id {template.db_id!r} not in databases {sorted(db_paths)}")
        conn = sqlite3.connect(db_paths[template.db_id])
        values = _slot_values(conn, template)
        conn.close()
        chosen = rng.sample(values, min(per_template, len(values)))
        for s_index, slot in enumerate(chosen):
            filled = dict(zip(template.slot_names, (str(v).replace("'", "''") for v in slot), strict=True))
            shown = dict(zip(template.slot_names, (str(v) for v in slot), strict=True))
            for lang, text in (("en", template.en), ("zh", template.zh)):
                examples.append(
                    {
                        "task_id": TASK_ID,
                        "example_id": f"t{t_index:02d}-{s_index}-{lang}",
                        # both languages of one question share a group, so they land in the same split
                        "group_id": f"t{t_index:02d}-{s_index}",
                        "lang": lang,
                        "db_id": template.db_id,
                        "db_path": str(db_paths[template.db_id]),
                        "schema": SCHEMAS[template.db_id],
                        "question": text.format(**shown),
                        "gold_sql": template.sql.format(**filled),
                    }
                )
    return examples


def split_examples(examples: list[dict], seed: int, dev_fraction: float = 0.25) -> list[dict]:
    """Assign `split` = train|dev by a seeded shuffle of groups (`group_id`, else each example);
    the same seed gives the same split, and no group straddles train and dev."""
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    groups = sorted({ex.get("group_id", ex["example_id"]) for ex in examples})
    random.Random(f"split:{seed}").shuffle(groups)
    dev = set(groups[: max(1, round(len(groups) * dev_fraction))])
    return [{**ex, "split": "dev" if ex.get("group_id", ex["example_id"]) in dev else "train"} for ex in examples]


def synthetic_dataset(out_dir: Path, seed: int, per_template: int = 3, dev_fraction: float = 0.25) -> list[dict]:
    """Databases under `out_dir/db/` plus split examples; deterministic for `seed`."""
    paths = build_databases(Path(out_dir) / "db", seed)
    return split_examples(generate_examples(paths, seed, per_template), seed, dev_fraction)
