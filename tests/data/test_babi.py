"""The bAbI-style simulator: seeded stories whose supporting facts alone give each answer."""

import re

import pytest
import torch

from attnzoo.data import babi

MOVE = re.compile(r"^(\w+) (?:moved|went|journeyed|travelled) to the (\w+)\.$")
GET = re.compile(r"^(\w+) (?:got|picked up|grabbed|took) the (\w+) there\.$")
DROP = re.compile(r"^(\w+) (?:dropped|discarded|put down|left) the (\w+)\.$")


def solve(sentences, question):
    """An independent reader of the world's rules: replay ``sentences`` (in order) and answer, or None."""
    where, carrier, at = {}, {}, {}
    for s in sentences:
        if m := MOVE.match(s):
            person, place = m.groups()
            where[person] = place
            for obj, who in carrier.items():
                if who == person:
                    at[obj] = place
        elif m := GET.match(s):
            person, obj = m.groups()
            carrier[obj], at[obj] = person, where.get(person)
        elif m := DROP.match(s):
            person, obj = m.groups()
            carrier.pop(obj, None)
            at[obj] = where.get(person)
        else:
            raise AssertionError(f"a sentence outside the world's grammar: {s!r}")
    if m := re.match(r"^Where is the (\w+)\?$", question):
        return at.get(m.group(1))
    if m := re.match(r"^Where is (\w+)\?$", question):
        return where.get(m.group(1))
    m = re.match(r"^Is (\w+) in the (\w+)\?$", question)
    assert m, question
    person, place = m.groups()
    return None if person not in where else "yes" if where[person] == place else "no"


@pytest.mark.parametrize("task", babi.TASKS)
def test_the_same_seed_gives_the_same_stories_and_another_seed_others(task):
    a, b = babi.make_stories(task, 30, seed=7), babi.make_stories(task, 30, seed=7)
    assert a == b
    assert babi.make_stories(task, 30, seed=8) != a
    assert babi.make_stories(task, 5, seed=7) == a[:5]  # story i does not depend on how many are drawn
    split = babi.make_split(task, 20, 10, 10, seed=1)
    assert split.train == babi.make_stories(task, 20, 3) and split.test == babi.make_stories(task, 10, 5)
    assert not {s.sentences for s in split.train} & {s.sentences for s in split.test}


@pytest.mark.parametrize("task", babi.TASKS)
def test_the_supporting_facts_alone_determine_every_answer(task):
    stories = babi.make_stories(task, 300, seed=0)
    n = 0
    for story in stories:
        assert len(story.questions) == babi.QUESTIONS_PER_STORY
        for q in story.questions:
            so_far = story.sentences[:q.after]
            assert len(q.support) == (2 if task == "two" else 1) and list(q.support) == sorted(set(q.support))
            assert all(0 <= i < q.after for i in q.support)
            assert solve([so_far[i] for i in q.support], q.text) == q.answer, (so_far, q)
            assert solve(so_far, q.text) == q.answer  # and the whole story agrees
            n += 1
    assert n == 1500


def test_the_vocabulary_and_answers_are_babis():
    words = set()
    for task in babi.TASKS:
        for s in babi.make_stories(task, 100, seed=3):
            for text in s.sentences:
                words.update(babi.tokenize(text))
    assert {p.lower() for p in babi.PEOPLE} | set(babi.PLACES) | set(babi.MOVES) | set(babi.OBJECTS) <= words
    answers = {q.answer for s in babi.make_stories("yesno", 100, seed=3) for q in s.questions}
    assert answers == {"yes", "no"}
    answers = {q.answer for t in ("single", "two") for s in babi.make_stories(t, 100, seed=3) for q in s.questions}
    assert answers == set(babi.PLACES)


def test_yes_no_questions_are_balanced_and_some_no_answers_name_the_previous_room():
    qs = [(s, q) for s in babi.make_stories("yesno", 400, seed=0) for q in s.questions]
    yes = sum(q.answer == "yes" for _, q in qs) / len(qs)
    assert 0.45 < yes < 0.55
    earlier = 0
    for s, q in qs:
        person, place = re.match(r"^Is (\w+) in the (\w+)\?$", q.text).groups()
        if q.answer == "no" and solve(s.sentences[:q.support[0]], f"Where is {person}?") == place:
            earlier += 1
    assert earlier > 100  # the latest move, not any move, decides


def test_examples_and_encoding():
    stories = babi.make_stories("two", 4, seed=0)
    items = babi.examples(stories)
    assert len(items) == 20 and items[0].story == stories[0].sentences[:stories[0].questions[0].after]
    vocab = babi.build_vocab(stories)
    enc = babi.encode(items, vocab)
    N, S, W = enc.story.shape
    assert N == 20 and S == max(len(e.story) for e in items) and enc.question.shape[0] == 20
    for n, e in enumerate(items):
        assert int(enc.sentences[n]) == len(e.story)
        assert (enc.story[n, len(e.story):] == 0).all()  # padded sentences are all 0
        assert vocab.decode(enc.story[n, 0].tolist()) == babi.tokenize(e.story[0])
        assert enc.support[n].nonzero().flatten().tolist() == list(e.support)
        assert vocab.tokens[int(enc.answer[n])] == e.answer
    short = babi.encode(items, vocab, memory_size=3)  # the last 3 sentences; support that falls off is dropped
    assert short.story.shape[1] == 3 and int(short.sentences.max()) == 3
    e = items[-1]
    kept = [i - (len(e.story) - 3) for i in e.support if i >= len(e.story) - 3]
    assert short.support[-1].nonzero().flatten().tolist() == kept
    assert vocab.decode(short.story[-1, -1].tolist()) == babi.tokenize(e.story[-1])
    b = enc.batch(torch.tensor([0, 1]))  # trimmed to the longest story in the batch
    assert b.story.shape[1] == int(enc.sentences[:2].max()) and len(b) == 2


def test_bad_requests():
    with pytest.raises(ValueError, match="unknown story task 'sngle'.*did you mean 'single'"):
        babi.make_stories("sngle", 3, 0)
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        babi.make_stories("single", -1, 0)
    with pytest.raises(TypeError, match="seed must be an int"):
        babi.make_stories("single", 1, 0.5)
