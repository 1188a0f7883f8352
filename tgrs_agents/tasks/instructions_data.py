"""Words and checks of the ``instructions`` family: topics, constraint kinds and their verifier specs.

A task is a topic (an open question, a list of things, a pair of JSON keys) plus one verifiable
constraint in the style of IFEval (Zhou et al., 2023). :func:`constraint` turns ``(kind, item,
param)`` into the instruction text and the task's own check: a ``regex`` or ``json_schema``
teacher config (without its name) that :func:`tgrs_agents.tasks.instructions.follows` runs. The
first six kinds are the ones ``benchmarks/bench_smollm2.py`` measured SmolLM2-135M-Instruct on.
"""

from __future__ import annotations

from typing import Any

# (open question, a word that fits an answer to it)
QUESTIONS: list[tuple[str, str]] = [
    ("What is your favourite season and why?", "warm"), ("Describe a cat in a sentence.", "fur"),
    ("Why do people drink coffee?", "morning"), ("What is the sun?", "star"),
    ("Describe the ocean.", "blue"), ("Tell me about bread.", "flour"),
    ("Describe a city at night.", "lights"), ("What do you like about music?", "rhythm"),
    ("Why do birds sing?", "song"), ("What is a library for?", "books"),
    ("Describe a forest in autumn.", "leaves"), ("Why is sleep important?", "rest"),
    ("What makes a good friend?", "trust"), ("Describe a rainy day.", "wet"),
    ("Why do people travel?", "explore"), ("What is a volcano?", "lava"),
    ("Describe your ideal breakfast.", "eggs"), ("Why do we need water?", "life"),
    ("What is the moon made of?", "rock"), ("Describe a busy market.", "noise"),
    ("Why do leaves change colour?", "autumn"), ("What is a good way to relax?", "calm"),
    ("Describe a mountain.", "snow"), ("Why do people keep dogs?", "loyal"),
    ("What is a computer?", "machine"), ("Describe a summer evening.", "sunset"),
    ("Why should we recycle?", "waste"), ("What is a rainbow?", "colours"),
    ("Describe a garden.", "flowers"), ("Why do people play sports?", "team"),
    ("What is the wind?", "air"), ("Describe a train journey.", "window"),
    ("Why do we celebrate birthdays?", "cake"), ("What is a river?", "flow"),
    ("Describe a snowy morning.", "cold"), ("Why do people read novels?", "story"),
    ("What is a desert?", "sand"), ("Describe a kitchen.", "cook"),
    ("Why is exercise good for you?", "health"), ("What is the internet?", "network"),
    ("Describe a beach.", "waves"), ("Why do people paint?", "art"),
    ("What is thunder?", "loud"), ("Describe a school.", "learn"),
    ("Why do we wear shoes?", "feet"), ("What is a farm?", "animals"),
    ("Describe an old house.", "dust"), ("Why do people smile?", "happy"),
]

# things to list (plural nouns)
THINGS: list[str] = [
    "fruits", "colours", "animals", "countries", "vegetables", "sports", "musical instruments", "birds",
    "planets", "tools", "flowers", "drinks", "jobs", "board games", "rivers", "cities", "vehicles",
    "trees", "insects", "languages", "desserts", "metals", "shapes", "fish",
]

# (key a, key b, what a is, what b is)
JSON_KEYS: list[tuple[str, str, str, str]] = [
    ("a", "b", "a colour", "an animal"), ("name", "age", "a first name", "a number"),
    ("city", "country", "a city", "its country"), ("x", "y", "a fruit", "a vegetable"),
    ("title", "author", "a book title", "its author"), ("food", "price", "a food", "a price"),
    ("day", "weather", "a weekday", "the weather"), ("planet", "moons", "a planet", "a number of moons"),
    ("song", "artist", "a song", "its singer"), ("sport", "players", "a sport", "a number of players"),
    ("tree", "height", "a tree", "a height in metres"), ("first", "last", "a first name", "a last name"),
    ("car", "colour", "a car brand", "a colour"), ("drink", "temperature", "a drink", "hot or cold"),
    ("river", "length", "a river", "a length in km"), ("job", "tool", "a job", "a tool it uses"),
]

SHORT_LIMITS = (5, 8, 10, 12)  # "at most N words"
NUMBER_WORDS = {5: "five", 8: "eight", 10: "ten", 12: "twelve"}
START_WORDS = ("Yes", "Well", "Sure", "Today", "Honestly", "First")
END_PHRASES = ("Is there anything else?", "That is all.", "Thank you.", "The end.")

QUESTION_KINDS = ("lowercase", "uppercase", "short", "keyword", "start", "end")
KINDS: tuple[str, ...] = (*QUESTION_KINDS, "json", "bullets")


def pool(kind: str) -> list[Any]:
    """The topics a kind draws from: questions, things to list, or JSON key pairs."""
    return THINGS if kind == "bullets" else JSON_KEYS if kind == "json" else QUESTIONS  # type: ignore[return-value]


def params(kind: str, item: Any) -> tuple[Any, ...]:
    """The parameter values a kind takes on one topic (a single None where it takes none)."""
    if kind == "short":
        return SHORT_LIMITS
    if kind == "start":
        return START_WORDS
    if kind == "end":
        return END_PHRASES
    if kind == "keyword":
        return (item[1],)
    return (None,)


def _words(n: int) -> str:
    return rf"\A\s*(?:\S+\s+){{0,{n - 1}}}\S+\s*\Z"


def constraint(kind: str, item: Any, param: Any) -> tuple[str, dict[str, Any], str]:
    """(the instruction text, its check spec, a yes/no rubric for a judge) for ``(kind, item, param)``."""
    import re

    if kind in QUESTION_KINDS:
        q = item[0]
        if kind == "lowercase":
            return (f"{q} Answer in lowercase letters only, with no capital letters.",
                    {"kind": "regex", "pattern": r"\A[^A-Z]*[a-z][^A-Z]*\Z"},
                    "Is the reply written entirely in lowercase letters, with no capital letters?")
        if kind == "uppercase":
            return (f"{q} Answer in capital letters only.", {"kind": "regex", "pattern": r"\A[^a-z]*[A-Z][^a-z]*\Z"},
                    "Is the reply written entirely in capital letters?")
        if kind == "short":
            n = NUMBER_WORDS.get(int(param), str(param))
            return (f"{q} Answer in at most {n} words.", {"kind": "regex", "pattern": _words(int(param))},
                    f"Is the reply at most {n} words long?")
        if kind == "keyword":
            return (f"{q} Use the word '{param}' in your answer.",
                    {"kind": "regex", "pattern": rf"(?i)\b{re.escape(param)}\b"},
                    f"Does the reply contain the word '{param}'?")
        if kind == "start":
            return (f"{q} Start your answer with the word '{param}'.",
                    {"kind": "regex", "pattern": rf"\A\s*[\"']?{re.escape(param)}\b"},
                    f"Does the reply start with the word '{param}'?")
        return (f"{q} End your answer with the exact phrase '{param}'.",
                {"kind": "regex", "pattern": rf"{re.escape(param)}[\"']?\s*\Z"},
                f"Does the reply end with the exact phrase '{param}'?")
    if kind == "json":
        a, b, da, db = item
        schema = {"type": "object", "required": [a, b], "properties": {a: {}, b: {}}}
        return (f'Reply only with a JSON object with the keys "{a}" and "{b}": "{a}" is {da} and "{b}" is {db}.',
                {"kind": "json_schema", "schema": schema}, f'Is the reply a JSON object with the keys "{a}" and "{b}"?')
    if kind == "bullets":
        return (f"List exactly three {item}, one per line, each line starting with '- '.",
                {"kind": "regex", "pattern": r"\A\s*(?:- [^\n]+\n+){2}- [^\n]+\s*\Z"},
                "Does the reply list exactly three items as lines starting with '- '?")
    raise ValueError(f"unknown constraint kind {kind!r}; expected one of {', '.join(KINDS)}")


def item_key(kind: str, item: Any) -> str:
    """A topic's name, the same in every kind that draws it (the split keeps topics apart)."""
    return str(item[0]) if kind in QUESTION_KINDS or kind == "json" else str(item)


# ------------------------------------------------------------------ demonstrations (tiny student)

def answer(kind: str, item: Any, param: Any) -> str:
    """A short reply that meets the constraint (the warm-start demonstrations of the tiny student)."""
    if kind == "json":
        import json

        return json.dumps({item[0]: "one", item[1]: "two"})
    if kind == "bullets":
        return f"- {item} one\n- {item} two\n- {item} three"
    word = item[1]
    if kind == "lowercase":
        return f"it is about {word}."
    if kind == "uppercase":
        return f"IT IS ABOUT {word.upper()}."
    if kind == "short":
        return f"It is {word}."
    if kind == "keyword":
        return f"It is about {word}."
    if kind == "start":
        return f"{param}, it is about {word}."
    return f"It is about {word}. {param}"
