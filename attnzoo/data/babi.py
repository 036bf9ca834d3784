"""bAbI-style question answering stories from a seeded simulator (synthetic data).

The bAbI tasks (Weston et al. 2015, "Towards AI-Complete Question Answering: A
Set of Prerequisite Toy Tasks") are themselves synthetic: short stories that a
simulated world writes, with questions whose answers follow from one or two of
the story's sentences. This module is a small simulator in that style, not the
original files: the vocabulary is bAbI's (people Mary, John, Sandra and Daniel;
six rooms; moved / went / journeyed / travelled; a football, an apple and some
milk), the rules are those of bAbI's tasks 1, 2 and 6, and nothing is
downloaded. Every story comes from ``random.Random(seed)``, so the same
``(task, n, seed)`` always gives the same stories.

Story tasks
-----------
``single`` (bAbI task 1, single supporting fact)::

    Mary moved to the bathroom. John went to the hallway. Where is Mary? -> bathroom   (support: sentence 0)

``two`` (bAbI task 2, two supporting facts): people also pick up and drop
objects; "Where is the football?" needs who holds it (or dropped it) and where
that person went::

    John went to the kitchen. John picked up the football there. ... Where is the football? -> kitchen  (support: 0, 1)

``yesno`` (bAbI task 6, yes/no questions)::

    Daniel journeyed to the office. ... Is Daniel in the office? -> yes   (support: Daniel's last move)

A story holds several statements and five questions between them, as bAbI's
do; each question sees the story so far (the statements before it), and records
the indices of its supporting facts among those statements. The support is
exact: replaying only the supporting sentences with the world's rules gives the
answer (``tests/data/test_babi.py`` checks this for every question).

Splits: :func:`make_split` draws train, dev and test stories with different
seeds (``3 * seed``, ``3 * seed + 1``, ``3 * seed + 2``, so no two parts or
seeds share a stream). The default training set is 1,000 stories (5,000
questions); bAbI's "1k" release has 1,000 training questions (200 stories of
task 1), so ``train_stories=200`` matches its size.

Shape legend (:func:`encode`): N questions, S sentences of the story so far
(the most recent ``memory_size``), W words per sentence, Wq words per question.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core import validate as V
from .vocab import Vocab

TASKS = ("single", "two", "yesno")
PEOPLE = ("Mary", "John", "Sandra", "Daniel")
PLACES = ("bathroom", "hallway", "garden", "office", "kitchen", "bedroom")
MOVES = ("moved", "went", "journeyed", "travelled")
OBJECTS = ("football", "apple", "milk")
GETS = ("got", "picked up", "grabbed", "took")  # "{person} {get} the {object} there."
DROPS = ("dropped", "discarded", "put down", "left")  # "{person} {drop} the {object}."
QUESTIONS_PER_STORY = 5  # as in bAbI's tasks 1, 2 and 6
#: bAbI task number of each story task (for the report)
BABI_TASK = {"single": 1, "two": 2, "yesno": 6}


@dataclass(frozen=True)
class Question:
    """One question of a story; it sees ``story.sentences[:after]``."""

    text: str  # "Where is Mary?"
    answer: str  # one word: a place, or yes / no
    support: tuple[int, ...]  # indices of the supporting facts among the story's sentences (ascending)
    after: int  # how many of the story's sentences come before the question


@dataclass(frozen=True)
class Story:
    task: str  # single | two | yesno
    sentences: tuple[str, ...]  # the statements, in order
    questions: tuple[Question, ...]  # asked between them


@dataclass(frozen=True)
class Example:
    """A question with the story so far: what a model reads."""

    story: tuple[str, ...]  # the sentences before the question
    question: str
    answer: str
    support: tuple[int, ...]  # indices into ``story``


@dataclass
class QASplit:
    task: str
    train: list[Story]
    dev: list[Story]
    test: list[Story]


def tokenize(text: str) -> list[str]:
    """Lower-case words, punctuation dropped: ``"Where is Mary?"`` -> ``["where", "is", "mary"]``."""
    return re.findall(r"[a-z]+", text.lower())


# --------------------------------------------------------------------------- the simulated world
def _move(rng: random.Random, person: str, loc: dict[str, str]) -> tuple[str, str]:
    place = rng.choice([p for p in PLACES if p != loc.get(person)])
    return place, f"{person} {rng.choice(MOVES)} to the {place}."


def _single_or_yesno(rng: random.Random, task: str) -> Story:
    sentences: list[str] = []
    questions: list[Question] = []
    loc: dict[str, str] = {}  # person -> where they are
    last: dict[str, int] = {}  # person -> index of their latest move
    before: dict[str, str] = {}  # person -> where they were before that move
    for _ in range(QUESTIONS_PER_STORY):
        for _ in range(2):  # two statements, then a question, as bAbI's task 1
            person = rng.choice(PEOPLE)
            place, sentence = _move(rng, person, loc)
            if person in loc:
                before[person] = loc[person]
            loc[person], last[person] = place, len(sentences)
            sentences.append(sentence)
        who = rng.choice(sorted(loc))
        if task == "single":
            questions.append(Question(f"Where is {who}?", loc[who], (last[who],), len(sentences)))
            continue
        if rng.random() < 0.5:
            place, answer = loc[who], "yes"
        else:  # "no": half the time where they were before (so the latest move is what counts)
            place = before[who] if who in before and rng.random() < 0.5 else \
                rng.choice([p for p in PLACES if p != loc[who]])
            answer = "no"
        questions.append(Question(f"Is {who} in the {place}?", answer, (last[who],), len(sentences)))
    return Story(task, tuple(sentences), tuple(questions))


def _two(rng: random.Random) -> Story:
    sentences: list[str] = []
    questions: list[Question] = []
    loc: dict[str, str] = {}  # person -> where they are
    last: dict[str, int] = {}  # person -> index of their latest move
    holder: dict[str, str | None] = {o: None for o in OBJECTS}  # object -> who carries it
    got: dict[str, int] = {}  # object -> index of the sentence in which its holder picked it up
    lying: dict[str, tuple[str, tuple[int, int]]] = {}  # dropped object -> (place, (move, drop) indices)

    def statement() -> None:
        person = rng.choice(PEOPLE)
        here = loc.get(person)
        gettable = [o for o in OBJECTS if holder[o] is None and here is not None
                    and (o not in lying or lying[o][0] == here)]
        carried = [o for o in OBJECTS if holder[o] == person]
        actions = ["move"] * 2 + ["get"] * bool(gettable) + ["drop"] * bool(carried)
        action = rng.choice(actions)
        i = len(sentences)
        if action == "move":
            place, sentence = _move(rng, person, loc)
            loc[person], last[person] = place, i
        elif action == "get":
            obj = rng.choice(gettable)
            holder[obj], got[obj] = person, i
            lying.pop(obj, None)
            sentence = f"{person} {rng.choice(GETS)} the {obj} there."
        else:
            obj = rng.choice(carried)
            holder[obj] = None
            lying[obj] = (loc[person], (last[person], i))
            sentence = f"{person} {rng.choice(DROPS)} the {obj}."
        sentences.append(sentence)

    for _ in range(QUESTIONS_PER_STORY):
        for _ in range(rng.randint(2, 4)):
            statement()
        while not any(holder[o] is not None or o in lying for o in OBJECTS):  # no object placed yet
            statement()
        obj = rng.choice([o for o in OBJECTS if holder[o] is not None or o in lying])
        if holder[obj] is not None:  # carried: where its holder went
            person = holder[obj]
            answer, support = loc[person], tuple(sorted((got[obj], last[person])))
        else:  # dropped: where its holder was when dropping it
            answer, support = lying[obj]
        questions.append(Question(f"Where is the {obj}?", answer, support, len(sentences)))
    return Story("two", tuple(sentences), tuple(questions))


def make_stories(task: str, n: int, seed: int) -> list[Story]:
    """``n`` stories of ``task`` (single | two | yesno), the same for the same ``seed``."""
    V.check_choice("story task", task, TASKS)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (a number of stories), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    rng = random.Random(seed)
    if task == "two":
        return [_two(rng) for _ in range(n)]
    return [_single_or_yesno(rng, task) for _ in range(n)]


def make_split(task: str, train_stories: int = 1000, dev_stories: int = 100, test_stories: int = 200,
               seed: int = 0) -> QASplit:
    """Train, dev and test stories drawn with seeds 3 seed, 3 seed + 1 and 3 seed + 2."""
    return QASplit(task, make_stories(task, train_stories, 3 * seed), make_stories(task, dev_stories, 3 * seed + 1),
                   make_stories(task, test_stories, 3 * seed + 2))


def examples(stories: Iterable[Story]) -> list[Example]:
    """One example per question, with the statements before it."""
    return [Example(s.sentences[:q.after], q.text, q.answer, q.support) for s in stories for q in s.questions]


def build_vocab(stories: Iterable[Story]) -> Vocab:
    """Every word of the stories, questions and answers (ids 0-3 are Vocab's specials; 0 pads)."""
    words: set[str] = set()
    for s in stories:
        for text in s.sentences:
            words.update(tokenize(text))
        for q in s.questions:
            words.update(tokenize(q.text))
            words.add(q.answer)
    return Vocab(words)


@dataclass
class EncodedQA:
    """A list of examples as padded word ids (0 = padding)."""

    story: Tensor  # (N, S, W) word ids of the story so far, sentences from the first; padded sentences all 0
    question: Tensor  # (N, Wq)
    answer: Tensor  # (N,) the answer word's id
    support: Tensor  # (N, S) True at the supporting facts
    sentences: Tensor  # (N,) how many sentences each story has (after keeping the last memory_size)

    def __len__(self) -> int:
        return len(self.answer)

    def batch(self, index: Tensor) -> EncodedQA:
        """Rows ``index``, trimmed to the longest story among them."""
        n = self.sentences[index]
        s = max(int(n.max()), 1) if len(index) else 1
        return EncodedQA(self.story[index, :s], self.question[index], self.answer[index], self.support[index, :s], n)

    def to(self, device) -> EncodedQA:
        return EncodedQA(*(t.to(device) for t in (self.story, self.question, self.answer, self.support,
                                                  self.sentences)))


def encode_story(sentences: Sequence[str], vocab: Vocab, memory_size: int) -> list[list[int]]:
    """The word ids of the last ``memory_size`` sentences."""
    return [vocab.encode(tokenize(s)) for s in list(sentences)[-memory_size:]] if memory_size else []


def encode(items: Sequence[Example], vocab: Vocab, memory_size: int = 50) -> EncodedQA:
    """Examples -> padded tensors; stories longer than ``memory_size`` keep their most recent sentences
    (MemN2N's memory limit), and supporting facts that fall off are dropped from ``support``."""
    V.check_positive("memory_size", memory_size)
    stories = [encode_story(e.story, vocab, memory_size) for e in items]
    questions = [vocab.encode(tokenize(e.question)) for e in items]
    N = len(items)
    S = max([len(s) for s in stories] + [1])
    W = max([len(w) for s in stories for w in s] + [1])
    Wq = max([len(q) for q in questions] + [1])
    story = torch.zeros(N, S, W, dtype=torch.long)  # (N, S, W)
    question = torch.zeros(N, Wq, dtype=torch.long)  # (N, Wq)
    support = torch.zeros(N, S, dtype=torch.bool)  # (N, S)
    for n, (e, s, q) in enumerate(zip(items, stories, questions)):
        for i, words in enumerate(s):
            story[n, i, :len(words)] = torch.tensor(words)
        question[n, :len(q)] = torch.tensor(q)
        dropped = len(e.story) - len(s)
        for i in e.support:
            if i >= dropped:
                support[n, i - dropped] = True
    answer = torch.tensor([vocab.encode([e.answer])[0] for e in items], dtype=torch.long)
    sentences = torch.tensor([len(s) for s in stories], dtype=torch.long)
    return EncodedQA(story, question, answer, support, sentences)


__all__ = ["TASKS", "PEOPLE", "PLACES", "MOVES", "OBJECTS", "Question", "Story", "Example", "QASplit", "EncodedQA",
           "tokenize", "make_stories", "make_split", "examples", "build_vocab", "encode", "encode_story"]
