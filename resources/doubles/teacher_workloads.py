"""Teacher-benchmark workloads: the same conversations for every contender.

- `sql`: Text2SQL prompts; every answer is a short SQL query of about the same length.
- `varied`: prompts that ask for very different amounts of work (a one-word answer up to a long
  essay), so answer lengths spread from about 10 to the token limit, as a reasoning teacher's do.
  Drawn with a fixed seed; one shared system prompt (distilabel's TextGeneration takes one).
"""

from __future__ import annotations

import random

VARIED_SYSTEM = "You are a helpful assistant for telecom site engineers. Do exactly what is asked."
TOPICS = (
    "a baseband unit",
    "a remote radio unit",
    "a fiber jumper",
    "a grounding cable",
    "a cable tray",
    "a cabinet fan",
    "a DC power cable",
    "a surge protector",
    "an antenna feeder",
    "a weatherproof seal",
    "a GPS antenna",
    "a battery cabinet",
)
# (amount of work, prompt template): from a one-word answer to a long essay.
TASKS = (
    ("tiny", "Answer with one word only: is {topic} mostly electrical or mechanical?"),
    ("short", "In one short sentence, what is {topic} for?"),
    ("list", "List {k} short checks an inspector makes on {topic}, one per line, nothing else."),
    ("steps", "Explain step by step, in {k} numbered steps with a sentence or two each, how to install {topic}."),
    (
        "essay",
        "Write a long, detailed technical essay (at least 600 words) about {topic}: its purpose, "
        "installation, common defects, inspection, maintenance and safety.",
    ),
)


def varied_conversations(count: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """`count` conversations [system, user], the task kinds spread evenly and shuffled with `seed`."""
    rng = random.Random(seed)
    conversations = []
    for i in range(count):
        _, template = TASKS[i % len(TASKS)]
        user = template.format(topic=rng.choice(TOPICS), k=rng.randint(3, 8))
        conversations.append([{"role": "system", "content": VARIED_SYSTEM}, {"role": "user", "content": user}])
    rng.shuffle(conversations)
    return conversations
